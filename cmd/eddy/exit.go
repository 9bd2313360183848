package main

import "errors"

// exitCoder is an error that carries the process exit code eddy should end
// with (eddy profile passes its command's exit code through).
type exitCoder interface {
	error
	ExitCode() int
}

func asExitCoder(err error, target *exitCoder) bool {
	return errors.As(err, target)
}
