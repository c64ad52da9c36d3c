package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
)

// Errors of a generation lookup.
var (
	// ErrNotYet: the gateway has no record of the generation yet (it
	// writes one a few seconds after the generation ends); ask again.
	ErrNotYet = errors.New("the gateway has no record of the generation yet")
	// ErrRefused wraps an answer that asking again will not change (401,
	// 403, another 4xx but 408 and 429, or a record that contradicts the
	// request).
	ErrRefused = errors.New("the gateway refused the generation lookup")
	// ErrInvalidID: the id is not gen_ and 1 to 64 letters or digits; no
	// request was made.
	ErrInvalidID = errors.New("invalid generation id")
)

// validID is AI Gateway's generation id, e.g. gen_01KY071V9GQK1EBS343E5TY39W.
var validID = regexp.MustCompile(`^gen_[A-Za-z0-9]{1,64}$`)

const maxGenerationBytes = 1 << 20

// Generation is the gateway's record of one generation: what the account
// paid, and the provider's own token counts (native: counted the way
// that provider counts, not normalised).
type Generation struct {
	ID                  string
	Model               string
	TotalCost           float64 // USD
	PromptTokens        int64
	CompletionTokens    int64
	CachedTokens        int64
	CacheCreationTokens int64
	ReasoningTokens     int64
}

// LookupGeneration reads GET baseURL/v1/generation?id=<id> with the
// proxy's own credential. Its errors: [ErrInvalidID] (no request made),
// [ErrNotYet] for a 404 or an answer without data, one wrapping
// [ErrRefused] for an answer that will not change, and any other (a 5xx,
// a transport error, an unreadable body) to be retried.
func LookupGeneration(ctx context.Context, client *http.Client, baseURL, credential, id string) (Generation, error) {
	if !validID.MatchString(id) {
		return Generation{}, ErrInvalidID
	}
	base, err := parseBaseURL(baseURL)
	if err != nil {
		return Generation{}, err
	}
	if client == nil {
		client = defaultClient
	}
	if credential == "" {
		return Generation{}, errors.New("looking up a generation: no credential")
	}
	return lookup(ctx, client, base, credential, id)
}

func lookup(ctx context.Context, client *http.Client, base *url.URL, credential, id string) (Generation, error) {
	u := base.JoinPath("v1", "generation")
	u.RawQuery = url.Values{"id": {id}}.Encode()
	resp, err := get(ctx, client, u.String(), credential)
	if err != nil {
		var se *statusError
		if errors.As(err, &se) {
			switch {
			case se.code == http.StatusNotFound:
				return Generation{}, fmt.Errorf("%w (%v)", ErrNotYet, err)
			case se.code == http.StatusRequestTimeout || se.code == http.StatusTooManyRequests:
			case se.code/100 == 4:
				return Generation{}, fmt.Errorf("%w: %w", ErrRefused, err)
			}
		}
		return Generation{}, err
	}
	defer resp.Body.Close()
	var body struct {
		Data *struct {
			ID                  string      `json:"id"`
			Model               string      `json:"model"`
			TotalCost           *jsonNumber `json:"total_cost"`
			PromptTokens        *jsonNumber `json:"native_tokens_prompt"`
			CompletionTokens    *jsonNumber `json:"native_tokens_completion"`
			CachedTokens        *jsonNumber `json:"native_tokens_cached"`
			CacheCreationTokens *jsonNumber `json:"native_tokens_cache_creation"`
			ReasoningTokens     *jsonNumber `json:"native_tokens_reasoning"`
		} `json:"data"`
	}
	lr := &io.LimitedReader{R: resp.Body, N: maxGenerationBytes + 1}
	if err := json.NewDecoder(lr).Decode(&body); err != nil {
		if lr.N <= 0 {
			return Generation{}, fmt.Errorf("%w: GET %s: answer larger than %d KiB", ErrRefused, u, maxGenerationBytes>>10)
		}
		return Generation{}, fmt.Errorf("GET %s: reading the answer: %w", u, scrub(err, credential))
	}
	d := body.Data
	if d == nil {
		return Generation{}, fmt.Errorf("%w (GET %s: answer without data)", ErrNotYet, u)
	}
	if d.ID != "" && d.ID != id {
		return Generation{}, fmt.Errorf("%w: GET %s: the record is for another generation", ErrRefused, u)
	}
	if d.TotalCost == nil {
		return Generation{}, fmt.Errorf("%w (GET %s: record without total_cost)", ErrNotYet, u)
	}
	g := Generation{ID: id, Model: d.Model}
	cost, err := strconv.ParseFloat(string(*d.TotalCost), 64)
	if err != nil || math.IsNaN(cost) || math.IsInf(cost, 0) || cost < 0 {
		return Generation{}, fmt.Errorf("%w: GET %s: total_cost %q is not a cost", ErrRefused, u, string(*d.TotalCost))
	}
	g.TotalCost = cost
	for _, f := range []struct {
		n   *jsonNumber
		dst *int64
	}{
		{d.PromptTokens, &g.PromptTokens},
		{d.CompletionTokens, &g.CompletionTokens},
		{d.CachedTokens, &g.CachedTokens},
		{d.CacheCreationTokens, &g.CacheCreationTokens},
		{d.ReasoningTokens, &g.ReasoningTokens},
	} {
		v, err := f.n.count()
		if err != nil {
			return Generation{}, fmt.Errorf("%w: GET %s: token count: %v", ErrRefused, u, err)
		}
		*f.dst = v
	}
	return g, nil
}
