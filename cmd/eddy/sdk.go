package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/prefetch"
	"github.com/eddy-autotune/eddy/sdk"
)

func init() {
	rootCmd.AddCommand(newSDKCmd())
}

func newSDKCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sdk",
		Short: "The SDKs eddy injects into application containers",
	}
	var to string
	install := &cobra.Command{
		Use:   "install --to DIR",
		Short: "Write the embedded SDKs into DIR (the webhook's init container runs this)",
		Long: `Write the SDKs embedded in this binary into DIR. The Python SDK is
DIR/sitecustomize.py and DIR/eddy_sdk: put DIR on PYTHONPATH and it activates
itself, following PyTorch DataLoaders and sending each epoch's read order to
the prefetch sidecar's socket ($EDDY_PREFETCH_SOCKET, default
` + prefetch.SDKMountPath + "/" + prefetch.HintSocketName + `).`,
		Example: "  eddy sdk install --to " + prefetch.SDKMountPath,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return errors.New("--to is required: the folder to write the SDKs into (e.g. " + prefetch.SDKMountPath + ")")
			}
			if err := sdk.Install(to); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %d SDK files; PYTHONPATH=%s\n", len(sdk.Files()), sdk.PythonPath(to))
			return nil
		},
	}
	install.Flags().StringVar(&to, "to", "", "folder to write the SDKs into")
	cmd.AddCommand(install)
	return cmd
}
