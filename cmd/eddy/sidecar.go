package main

import "github.com/eddy-autotune/eddy/internal/sidecarcmd"

func init() {
	rootCmd.AddCommand(sidecarcmd.Prefetch(), sidecarcmd.SDK())
}
