package credential

// PushRules are a push block with its placeholders resolved and its
// defaults applied: everything that decides which pushed token is
// accepted. It is part of the source's state key, so that sources that
// accept different tokens never share one.
type PushRules struct {
	Issuer  string   `json:"issuer,omitempty"`  // explicit: the only one
	Issuers []string `json:"issuers,omitempty"` // the defaults otherwise
	JWKSURL string   `json:"jwks_url,omitempty"`
	Team    string   `json:"team,omitempty"`
	Project string   `json:"project,omitempty"`
}
