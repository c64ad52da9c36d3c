package caddymodule

import (
	"errors"
	"fmt"
	"os"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/identity"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "ai-gateway-auth",
		Usage: "client-key [--secret <secret>] <name>",
		Short: "Tools for the ai_gateway_auth module",
		Long: `
client-key <name> prints a signed client key, sk-aigw-<name>.<signature>,
that a proxy configured with the same client_key_secret accepts as the
client <name>. The secret comes from --secret or, better (it stays out of
the shell history and the process list), from the environment variable
CLIENT_KEY_SECRET. The name is 1-128 characters of A-Z, a-z, 0-9, _ and -.
`,
		CobraFunc: func(cmd *cobra.Command) {
			sub := &cobra.Command{
				Use:   "client-key [--secret <secret>] <name>",
				Short: "Prints a signed client key for <name>",
				Args:  cobra.ExactArgs(1),
				RunE: func(c *cobra.Command, args []string) error {
					secret, _ := c.Flags().GetString("secret")
					if secret == "" {
						secret = os.Getenv("CLIENT_KEY_SECRET")
					}
					if secret == "" {
						return errors.New("no secret: set CLIENT_KEY_SECRET or pass --secret")
					}
					if len(secret) < identity.MinSecretLen {
						fmt.Fprintf(c.ErrOrStderr(), "warning: the secret is shorter than %d bytes; use a random one, e.g. `openssl rand -base64 32`\n", identity.MinSecretLen)
					}
					key, err := identity.SignKey(args[0], secret)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.OutOrStdout(), key)
					return err
				},
			}
			sub.Flags().String("secret", "", "the client_key_secret (default: $CLIENT_KEY_SECRET)")
			cmd.AddCommand(sub)
		},
	})
}
