package main

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The heartbeat can be renewed only as often as flushes prove progress, so
// a flush interval the operator's stale-after cannot hold four times over
// is refused before anything starts, as are flush settings that make no
// sense.
func TestAnalyzerRefusesFlushSettingsTheHeartbeatCannotKeepUpWith(t *testing.T) {
	for args, want := range map[string]string{
		"--flush-interval=1m":            "--flush-interval 1m0s: at most 30s",
		"--flush-workers=0":              "--flush-workers 0: at least 1",
		"--shutdown-flush-timeout=-1s":   "--shutdown-flush-timeout -1s: must be positive",
		"--profile-checkpoint-every=1s":  "--profile-checkpoint-every 1s: at least --flush-interval (10s)",
		"--state-dir= --checkpoint-dir=": "--checkpoint-dir: no --state-dir to put it under",
	} {
		cmd := newAnalyzerCmd()
		cmd.SetArgs(strings.Fields(args))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		require.ErrorContains(t, cmd.Execute(), want, args)
	}
}
