package policy

import (
	"errors"
	"fmt"
	"strings"
)

// MaxGlobLen is the longest glob [Compile] accepts, in bytes.
const MaxGlobLen = 1024

// Glob is a compiled pattern over client ids or model ids (see the
// package comment for the rule). The zero Glob matches nothing. A Glob is
// immutable: share it freely.
type Glob struct {
	pattern string
	kind    globKind
	lit     string // globExact: the id; globPrefix, globSegPrefix: the prefix
	// chunks is the pattern cut at each "**", and each chunk cut at each
	// "*" (globGeneral only). A chunk between two "**" starts and ends
	// with a literal byte (no "***"), so its first and last literals are
	// not empty.
	chunks [][]string
	// prefix is the literal text before the first star (the whole
	// pattern when there is none); slashes counts the pattern's literal
	// '/' bytes: every id the glob matches holds at least that many.
	prefix  string
	slashes int
}

type globKind uint8

const (
	globNone      globKind = iota // the zero Glob: matches nothing
	globExact                     // no star
	globAny                       // "**"
	globPrefix                    // "<lit>**"
	globSegPrefix                 // "<lit>*"
	globGeneral
)

// Compile compiles a glob: '*' matches any run of bytes without '/', "**"
// any run at all, every other byte itself. It refuses an empty pattern, one
// longer than MaxGlobLen, one with whitespace, a control or non-ASCII
// byte, one of ?[]{}\ (wildcards or escapes elsewhere, never part of an
// id here), or three stars in a row.
func Compile(pattern string) (Glob, error) {
	if err := checkPattern(pattern); err != nil {
		return Glob{}, err
	}
	g := Glob{pattern: pattern}
	star := strings.IndexByte(pattern, '*')
	g.prefix = pattern
	if star >= 0 {
		g.prefix = pattern[:star]
	}
	g.slashes = strings.Count(pattern, "/")
	switch {
	case star < 0:
		g.kind, g.lit = globExact, pattern
	case pattern == "**":
		g.kind = globAny
	case star == len(pattern)-2 && strings.HasSuffix(pattern, "**"):
		g.kind, g.lit = globPrefix, g.prefix
	case star == len(pattern)-1:
		g.kind, g.lit = globSegPrefix, g.prefix
	default:
		g.kind = globGeneral
		for _, c := range strings.Split(pattern, "**") {
			g.chunks = append(g.chunks, strings.Split(c, "*"))
		}
	}
	return g, nil
}

// MustCompile is Compile for patterns known to be good (tests, constants);
// it panics on an error.
func MustCompile(pattern string) Glob {
	g, err := Compile(pattern)
	if err != nil {
		panic(err)
	}
	return g
}

func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty glob")
	}
	if len(p) > MaxGlobLen {
		return fmt.Errorf("glob %s is longer than %d bytes", quoteClipped(p), MaxGlobLen)
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			return fmt.Errorf("glob %s holds whitespace", quoteClipped(p))
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("glob %s holds a control character", quoteClipped(p))
		case c >= 0x80:
			return fmt.Errorf("glob %s holds a non-ASCII character; ids are ASCII (a client id's names are path-escaped: write %%XX)", quoteClipped(p))
		case strings.IndexByte(`?[]{}\`, c) >= 0:
			return fmt.Errorf("glob %s holds %q, which is no wildcard here and in no id: a glob has only * (within one '/'-separated segment) and ** (across '/')", quoteClipped(p), c)
		}
	}
	if strings.Contains(p, "***") {
		return fmt.Errorf("glob %s holds ***: write * (within one segment) or ** (across '/')", quoteClipped(p))
	}
	return nil
}

// String is the pattern the glob was compiled from.
func (g Glob) String() string { return g.pattern }

// Match says whether the glob matches all of s. It takes time linear in
// len(s) for a given pattern (it looks at no more than (len(s)+1) × (the
// pattern's '/' count + 3) bytes, plus the pattern's length for each '/'
// in s and once more), never exponential, and allocates nothing.
func (g Glob) Match(s string) bool { return g.match(s) }

func (g *Glob) match(s string) bool {
	switch g.kind {
	case globExact:
		return s == g.lit
	case globAny:
		return true
	case globPrefix:
		return strings.HasPrefix(s, g.lit)
	case globSegPrefix:
		return strings.HasPrefix(s, g.lit) && strings.IndexByte(s[len(g.lit):], '/') < 0
	case globGeneral:
		ok, _ := matchChunks(g.chunks, s)
		return ok
	}
	return false
}

// matchChunks matches s against a pattern cut at "**" into chunks, each
// cut at '*' into literals. It returns the work done (bytes looked at, an
// upper bound on what the strings functions it calls scan) so that tests
// can hold the worst cases to a linear bound.
//
// Why greedy is right: a '*' matches no '/', so every '*' of a chunk lies
// in a '/'-free stretch of s whose end does not depend on where the
// chunk's earlier literals are placed (only on how many '/' they hold).
// Placing each literal at its earliest fit therefore never loses a match
// that a later fit would find; and a "**" matches anything, so the
// earliest end of a chunk leaves the most room for the rest.
func matchChunks(chunks [][]string, s string) (bool, int) {
	w := 0
	if len(chunks) == 1 {
		ok := matchWhole(chunks[0], s, &w)
		return ok, w
	}
	w += len(chunks[0][0])
	if !strings.HasPrefix(s, chunks[0][0]) {
		return false, w
	}
	p, ok := placeStars(chunks[0][1:], s, len(chunks[0][0]), len(s), &w)
	if !ok {
		return false, w
	}
	for _, c := range chunks[1 : len(chunks)-1] {
		if p, ok = searchChunk(c, s, p, &w); !ok {
			return false, w
		}
	}
	ok = matchSuffix(chunks[len(chunks)-1], s, p, &w)
	return ok, w
}

// matchWhole matches all of s against one chunk (a pattern without "**").
func matchWhole(lits []string, s string, w *int) bool {
	first, last := lits[0], lits[len(lits)-1]
	*w += len(first)
	if len(lits) == 1 {
		return s == first
	}
	*w += len(last)
	limit := len(s) - len(last)
	if limit < len(first) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	p, ok := placeStars(lits[1:len(lits)-1], s, len(first), limit, w)
	if !ok {
		return false
	}
	*w += limit - p
	return strings.IndexByte(s[p:limit], '/') < 0 // the last star
}

// placeStars places each literal, each after a '*', at its earliest fit in
// s[p:limit], and returns where the last one ends.
func placeStars(lits []string, s string, p, limit int, w *int) (int, bool) {
	z := -1 // the first '/' at or after p, or limit; -1: not looked yet
	for _, l := range lits {
		if z < p {
			i := strings.IndexByte(s[p:limit], '/')
			if i < 0 {
				z = limit
				*w += limit - p
			} else {
				z = p + i
				*w += i + 1
			}
		}
		// The star before l matches s[p:start] with no '/': start <= z.
		end := min(limit, z+len(l))
		i := strings.Index(s[p:end], l)
		if i < 0 {
			*w += end - p
			return p, false
		}
		*w += i + len(l)
		p += i + len(l)
	}
	return p, true
}

// searchChunk finds the earliest end of a match of a chunk in s[p:], the
// chunk floating (after a "**").
func searchChunk(lits []string, s string, p int, w *int) (int, bool) {
	for {
		i := strings.Index(s[p:], lits[0])
		if i < 0 {
			*w += len(s) - p
			return p, false
		}
		*w += i + len(lits[0])
		a := p + i
		if end, ok := placeStars(lits[1:], s, a+len(lits[0]), len(s), w); ok {
			return end, true
		}
		// Every start in the same '/'-free stretch as a meets the same
		// '/' at the star that failed: go past the stretch.
		j := strings.IndexByte(s[a:], '/')
		if j < 0 {
			*w += len(s) - a
			return p, false
		}
		*w += j + 1
		p = a + j + 1
	}
}

// matchSuffix matches a chunk (after a "**") against a suffix of s that
// starts at p or later: each literal at its latest fit, from the end.
func matchSuffix(lits []string, s string, p int, w *int) bool {
	last := lits[len(lits)-1]
	*w += len(last)
	if len(s)-len(last) < p || !strings.HasSuffix(s, last) {
		return false
	}
	start := len(s) - len(last)
	z := len(s) // the last '/' before start, or p-1; len(s): not looked yet
	for i := len(lits) - 2; i >= 0; i-- {
		l := lits[i]
		if z >= start {
			j := strings.LastIndexByte(s[p:start], '/')
			*w += start - p - j
			z = p + j // p-1 when there is none
		}
		// The star after l matches s[end:start] with no '/': end > z.
		lo := max(p, z+1-len(l))
		j := strings.LastIndex(s[lo:start], l)
		if j < 0 {
			*w += start - lo
			return false
		}
		*w += start - lo - j
		start = lo + j
	}
	return true
}

// covers says, soundly but not completely, whether every id b matches is
// matched by a: a is "**", a and b are the same pattern, b is an exact id
// that a matches, a is "<p>**" and b's literal prefix starts with p, or a
// is "<p>*" and b is "<q>" or "<q>*" where q starts with p and has no '/'
// after it.
func covers(a, b *Glob) bool {
	if a.kind == globNone || b.kind == globNone {
		return false
	}
	switch {
	case a.kind == globAny, a.pattern == b.pattern:
		return true
	case b.kind == globExact:
		return a.match(b.lit)
	case a.kind == globPrefix:
		return strings.HasPrefix(b.prefix, a.lit)
	case a.kind == globSegPrefix && b.kind == globSegPrefix:
		return strings.HasPrefix(b.lit, a.lit) && strings.IndexByte(b.lit[len(a.lit):], '/') < 0
	}
	return false
}

// quoteClipped is s quoted for an error, cut to 64 bytes.
func quoteClipped(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
