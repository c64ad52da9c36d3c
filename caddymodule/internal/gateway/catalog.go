package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// Bounds on a catalog: AI Gateway's lists a few hundred models in well
// under a megabyte.
const (
	maxCatalogBytes  = 32 << 20
	maxCatalogModels = 100_000
)

// Catalog is one reading of AI Gateway's model list. It is immutable:
// share it freely.
type Catalog struct {
	models  map[string]Model
	highest Prices
	skipped int
	fetched time.Time
}

// Model is what the catalog says about one model.
type Model struct {
	ID   string
	Type string // language, embedding, image, …
	// MaxTokens is the largest output, ContextWindow the largest input
	// plus output; 0 when the catalog does not say.
	MaxTokens, ContextWindow int64
	Prices                   Prices
}

// Prices are USD per token. CacheRead and CacheWrite are the input price
// when the catalog gives none.
type Prices struct {
	Input, Output, CacheRead, CacheWrite float64
	// HasTokenPrices is false for a model the catalog prices by other
	// units only (an image model), or without an input price, or without
	// an output price unless it is an embedding model. Such a model is
	// priced at the catalog's highest prices.
	HasTokenPrices bool
}

// Model returns the model with this exact id.
func (c *Catalog) Model(id string) (Model, bool) {
	if c == nil {
		return Model{}, false
	}
	m, ok := c.models[id]
	return m, ok
}

// Len is the number of models read.
func (c *Catalog) Len() int {
	if c == nil {
		return 0
	}
	return len(c.models)
}

// Skipped is the number of catalog entries that could not be read.
func (c *Catalog) Skipped() int {
	if c == nil {
		return 0
	}
	return c.skipped
}

// Fetched is when the catalog was read from the gateway; zero for one
// parsed by [ParseCatalog] directly.
func (c *Catalog) Fetched() time.Time {
	if c == nil {
		return time.Time{}
	}
	return c.fetched
}

// Highest is, price by price, the highest of any model with token prices:
// what a model the catalog does not know is charged.
func (c *Catalog) Highest() Prices {
	if c == nil {
		return Prices{}
	}
	return c.highest
}

// ParseCatalog reads the answer of GET /v1/models, {"data":[model, …]},
// as it streams. It refuses more than 32 MiB or 100,000 entries, skips
// (and counts) an entry it cannot read, ignores members it does not know,
// and fails when no model with token prices could be read.
func ParseCatalog(r io.Reader) (*Catalog, error) {
	return parseCatalog(r, maxCatalogBytes, maxCatalogModels)
}

func parseCatalog(r io.Reader, maxBytes int64, maxModels int) (*Catalog, error) {
	lr := &io.LimitedReader{R: r, N: maxBytes + 1}
	c, err := decodeCatalog(json.NewDecoder(lr), maxModels)
	if lr.N <= 0 {
		return nil, fmt.Errorf("reading catalog: larger than %d bytes", maxBytes)
	}
	return c, err
}

func decodeCatalog(dec *json.Decoder, maxModels int) (*Catalog, error) {
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	c := &Catalog{models: make(map[string]Model)}
	sawData := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("reading catalog: %w", err)
		}
		if key, _ := tok.(string); key != "data" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("reading catalog: %w", err)
			}
			continue
		}
		if sawData {
			return nil, errors.New("reading catalog: data given twice")
		}
		sawData = true
		if err := expectDelim(dec, '['); err != nil {
			return nil, err
		}
		entries := 0
		for dec.More() {
			if entries++; entries > maxModels {
				return nil, fmt.Errorf("reading catalog: more than %d models", maxModels)
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, fmt.Errorf("reading catalog: %w", err)
			}
			m, ok := parseModel(raw)
			if _, dup := c.models[m.ID]; !ok || dup {
				c.skipped++
				continue
			}
			c.models[m.ID] = m
		}
		if _, err := dec.Token(); err != nil { // ]
			return nil, fmt.Errorf("reading catalog: %w", err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return nil, fmt.Errorf("reading catalog: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("reading catalog: data after the list")
	}
	if !sawData {
		return nil, errors.New("reading catalog: no data member")
	}
	if len(c.models) == 0 {
		return nil, fmt.Errorf("reading catalog: no usable model (%d skipped)", c.skipped)
	}
	for _, m := range c.models {
		if p := m.Prices; p.HasTokenPrices {
			h := &c.highest
			h.HasTokenPrices = true
			h.Input, h.Output = max(h.Input, p.Input), max(h.Output, p.Output)
			h.CacheRead, h.CacheWrite = max(h.CacheRead, p.CacheRead), max(h.CacheWrite, p.CacheWrite)
		}
	}
	if !c.highest.HasTokenPrices {
		// Unknown models would be priced at nothing.
		return nil, fmt.Errorf("reading catalog: no model with token prices among %d", len(c.models))
	}
	return c, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("reading catalog: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("reading catalog: want %q, got %v", want, tok)
	}
	return nil
}

// wireModel is a catalog entry as the gateway writes it. Pricing keys
// other than the four token prices (image, web_search, …) are kept raw
// and never read, so their shape cannot fail an entry.
type wireModel struct {
	ID            string                     `json:"id"`
	Type          string                     `json:"type"`
	MaxTokens     *jsonNumber                `json:"max_tokens"`
	ContextWindow *jsonNumber                `json:"context_window"`
	Pricing       map[string]json.RawMessage `json:"pricing"`
}

// parseModel reads one entry; ok is false for one that must be skipped.
func parseModel(raw []byte) (m Model, ok bool) {
	var w wireModel
	if err := json.Unmarshal(raw, &w); err != nil || w.ID == "" {
		return Model{}, false
	}
	m = Model{ID: w.ID, Type: w.Type}
	var err error
	if m.MaxTokens, err = w.MaxTokens.count(); err != nil {
		return Model{}, false
	}
	if m.ContextWindow, err = w.ContextWindow.count(); err != nil {
		return Model{}, false
	}
	price := func(key string) (float64, bool, error) {
		v, ok := w.Pricing[key]
		if !ok || string(bytes.TrimSpace(v)) == "null" {
			return 0, false, nil
		}
		var n jsonNumber
		if err := json.Unmarshal(v, &n); err != nil {
			return 0, false, err
		}
		f, err := n.price()
		return f, err == nil, err
	}
	in, hasIn, err1 := price("input")
	out, hasOut, err2 := price("output")
	read, hasRead, err3 := price("input_cache_read")
	write, hasWrite, err4 := price("input_cache_write")
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Model{}, false
	}
	p := Prices{Input: in, Output: out, CacheRead: in, CacheWrite: in}
	if hasRead {
		p.CacheRead = read
	}
	if hasWrite {
		p.CacheWrite = write
	}
	p.HasTokenPrices = hasIn && (hasOut || m.Type == "embedding")
	if !p.HasTokenPrices {
		p = Prices{}
	}
	m.Prices = p
	return m, true
}

// jsonNumber is a number the gateway writes either as a JSON number or as
// a decimal string (prices are strings in the catalog, costs numbers in a
// generation record).
type jsonNumber string

func (n *jsonNumber) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*n = jsonNumber(s)
		return nil
	}
	var num json.Number
	if err := json.Unmarshal(b, &num); err != nil {
		return err
	}
	*n = jsonNumber(num)
	return nil
}

// price is a finite, non-negative float.
func (n jsonNumber) price() (float64, error) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("price %q out of range", string(n))
	}
	return f, nil
}

// count is a non-negative integer, written as one or as a float with no
// fraction (13 or 13.0); absent (nil) is 0.
func (n *jsonNumber) count() (int64, error) {
	if n == nil {
		return 0, nil
	}
	v, err := strconv.ParseInt(string(*n), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(*n), 64)
		if ferr != nil || f != math.Trunc(f) || f < 0 || f >= 1<<53 {
			return 0, fmt.Errorf("count %q is not a whole number", string(*n))
		}
		v = int64(f)
	}
	if v < 0 {
		return 0, fmt.Errorf("count %d is negative", v)
	}
	return v, nil
}
