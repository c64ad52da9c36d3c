# Claude Code through ai_gateway_auth. Source it before starting `claude`:
#
#   . examples/claude-code/env.sh && claude
#
# Claude Code sends ANTHROPIC_AUTH_TOKEN as "Authorization: Bearer ..." to
# $ANTHROPIC_BASE_URL/v1/messages. The token is the proxy's client key, not
# a real credential: nothing in the sandbox expires or needs rewriting.

export ANTHROPIC_BASE_URL=http://127.0.0.1:4000
export ANTHROPIC_AUTH_TOKEN=sk-placeholder

# A real Anthropic key left in the environment would make Claude Code send it
# as x-api-key as well (the proxy drops it, but Claude Code warns about the
# conflict). The proxy never needs it.
unset ANTHROPIC_API_KEY

# Optional: pick the model by its AI Gateway id.
# export ANTHROPIC_MODEL=anthropic/claude-sonnet-5.5
