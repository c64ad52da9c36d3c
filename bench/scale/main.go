// Command scale holds many concurrent SSE streams through the proxy,
// rotates the proxy's OIDC token file while they are open, and reports
// whether every stream completed and how much memory the proxy used.
// bench/scale.sh builds and starts the proxy and the fake upstream and
// runs it; see bench/README.md.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/bench/internal/benchtoken"
)

type config struct {
	url, key, statsURL, tokenFile, expect string
	streams, chunks, pid, bodySize        int
	rotateAfter, timeout, ramp            time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.url, "url", "http://127.0.0.1:18180/v1/chat/completions", "the proxy's chat completions URL")
	flag.StringVar(&c.key, "key", "sk-placeholder", "client key the proxy accepts")
	flag.StringVar(&c.statsURL, "stats", "http://127.0.0.1:18179/stats", "the fake upstream's /stats URL")
	flag.StringVar(&c.tokenFile, "token-file", "", "the proxy's `credential vercel_oidc { file … }`; rewritten with a new token (jti \"new\") after -rotate-after")
	flag.IntVar(&c.streams, "streams", 2000, "concurrent SSE streams")
	flag.IntVar(&c.chunks, "chunks", 30, "content chunks each stream must carry before [DONE] (the upstream's -sse-chunks)")
	flag.IntVar(&c.pid, "pid", 0, "the proxy's process id, for its memory (/proc/<pid>/status)")
	flag.IntVar(&c.bodySize, "body", 256<<10, "request body size in bytes (an agent's conversation: 100 KiB to over 1 MiB)")
	flag.StringVar(&c.expect, "expect", "jwt:old", "the credential every stream must reach the upstream with, as its /stats names it (key, jwt:<jti>)")
	flag.DurationVar(&c.rotateAfter, "rotate-after", 15*time.Second, "when to rotate the token, from the first stream's start")
	flag.DurationVar(&c.timeout, "timeout", 2*time.Minute, "limit for one stream")
	flag.DurationVar(&c.ramp, "ramp", 0, "open the streams evenly over this long (0: all at once, so that every body is uploaded at the same time)")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "FAILED:", err)
		os.Exit(1)
	}
}

type result struct {
	opened bool // the response headers came
	chunks int
	first  time.Duration // until the first chunk
	dur    time.Duration
	err    error
}

func run(c config) error {
	client := &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		MaxIdleConnsPerHost: c.streams,
		DisableCompression:  true,
	}}
	base, err := upstreamStats(client, c.statsURL) // the upstream may have served other runs
	if err != nil {
		return err
	}
	body := requestBody(c.bodySize)
	idle := memKB(c.pid, "VmRSS")
	var peakRSS atomic.Int64
	stopSampling := sampleRSS(c.pid, &peakRSS)

	start := time.Now()
	streams := startStreams(client, c, body, start)
	var rotation string
	if c.tokenFile != "" {
		time.Sleep(time.Until(start.Add(c.rotateAfter)))
		if rotation, err = rotate(client, c, streams.open.Load()); err != nil {
			return err
		}
	}
	streams.wg.Wait()
	elapsed := time.Since(start)
	stopSampling()

	sum := summarize(c, streams.results)
	stats, err := upstreamStats(client, c.statsURL)
	if err != nil {
		return err
	}
	stats.Mismatches -= base.Mismatches
	for k, v := range base.ByCredential {
		stats.ByCredential[k] -= v
	}
	report(c, sum, streams.maxOpen.Load(), elapsed, rotation, stats)
	if c.pid != 0 {
		reportMemory(c, idle, peakRSS.Load())
	}
	return verdict(c, sum, stats)
}

// streamRun is the streams of a run, as they go.
type streamRun struct {
	results       []result
	open, maxOpen atomic.Int64
	wg            sync.WaitGroup
}

// startStreams opens c.streams streams (evenly over c.ramp) and returns
// once all are open, or at c.rotateAfter, saying which.
func startStreams(client *http.Client, c config, body string, start time.Time) *streamRun {
	s := &streamRun{results: make([]result, c.streams)}
	allOpen := make(chan struct{})
	var opened sync.WaitGroup
	opened.Add(c.streams)
	go func() { opened.Wait(); close(allOpen) }()
	for i := range c.streams {
		s.wg.Go(func() {
			time.Sleep(time.Until(start.Add(c.ramp * time.Duration(i) / time.Duration(c.streams))))
			s.results[i] = stream(client, c, body, func() {
				storeMax(&s.maxOpen, s.open.Add(1))
				opened.Done()
			})
			if s.results[i].opened {
				s.open.Add(-1)
			} else {
				opened.Done()
			}
		})
	}
	select {
	case <-allOpen:
		fmt.Printf("%d streams open after %.1fs\n", c.streams, time.Since(start).Seconds())
	case <-time.After(c.rotateAfter):
		fmt.Printf("only %d of %d streams open after %s\n", s.open.Load(), c.streams, c.rotateAfter)
	}
	return s
}

// summary is what the streams of a run did.
type summary struct {
	failed                   []string
	minDur, maxDur, maxFirst time.Duration
}

// summarize checks every stream: all its chunks, streamed as they came.
func summarize(c config, results []result) summary {
	var s summary
	for i, r := range results {
		if r.err == nil && r.chunks != c.chunks {
			r.err = fmt.Errorf("%d chunks before [DONE], want %d", r.chunks, c.chunks)
		}
		// The upstream sends a chunk a second: a first chunk that comes
		// only near the end means the proxy held the stream back.
		if r.err == nil && r.chunks > 1 && r.first > r.dur/2 {
			r.err = fmt.Errorf("not streamed: first chunk after %.1fs of %.1fs", r.first.Seconds(), r.dur.Seconds())
		}
		if r.err != nil {
			s.failed = append(s.failed, fmt.Sprintf("stream %d: %v", i, r.err))
			continue
		}
		if s.minDur == 0 || r.dur < s.minDur {
			s.minDur = r.dur
		}
		s.maxDur = max(s.maxDur, r.dur)
		s.maxFirst = max(s.maxFirst, r.first)
	}
	return s
}

// report prints what the streams did and what the upstream saw.
func report(c config, sum summary, maxOpen int64, elapsed time.Duration, rotation string, stats stats) {
	fmt.Printf("streams completed with [DONE] and %d chunks: %d of %d (peak concurrently open: %d)\n",
		c.chunks, c.streams-len(sum.failed), c.streams, maxOpen)
	if len(sum.failed) < c.streams {
		fmt.Printf("completed streams lasted %.1f to %.1fs, first chunk after at most %.1fs; whole run %.1fs\n",
			sum.minDur.Seconds(), sum.maxDur.Seconds(), sum.maxFirst.Seconds(), elapsed.Seconds())
	}
	if rotation != "" {
		fmt.Println(rotation)
	}
	if c.tokenFile != "" {
		fmt.Printf("upstream saw: old token %d, new token %d, without the injected credential %d\n",
			stats.ByCredential["jwt:old"], stats.ByCredential["jwt:new"], stats.Mismatches)
	} else {
		fmt.Printf("upstream saw: %s %d, without the injected credential %d\n", c.expect, stats.ByCredential[c.expect], stats.Mismatches)
	}
}

// reportMemory prints the proxy's memory: idle, at its peak, per stream.
func reportMemory(c config, idle, peak int64) {
	hwm := memKB(c.pid, "VmHWM")
	perStream := float64(peak-idle) / float64(c.streams)
	fmt.Printf("proxy RSS: idle %.1f MiB, peak sampled %.1f MiB, VmHWM %.1f MiB\n", mib(idle), mib(peak), mib(hwm))
	fmt.Printf("proxy RSS per stream: %.1f KiB (VmHWM / streams), %.1f KiB ((peak - idle) / streams)\n",
		float64(hwm)/float64(c.streams), perStream)
	// for scale.sh, which compares runs
	fmt.Printf("RESULT idle_kib=%d peak_kib=%d hwm_kib=%d per_stream_kib=%.1f\n", idle, peak, hwm, perStream)
}

// verdict prints the first failures and says whether the run failed.
func verdict(c config, sum summary, stats stats) error {
	for i, f := range sum.failed {
		if i == 10 {
			fmt.Printf("... and %d more\n", len(sum.failed)-10)
			break
		}
		fmt.Println(f)
	}
	switch {
	case len(sum.failed) > 0:
		return fmt.Errorf("%d of %d streams did not complete", len(sum.failed), c.streams)
	case stats.Mismatches > 0:
		return fmt.Errorf("%d requests reached the upstream without the injected credential", stats.Mismatches)
	case stats.ByCredential[c.expect] < int64(c.streams):
		return fmt.Errorf("the upstream saw %s %d times, want at least %d", c.expect, stats.ByCredential[c.expect], c.streams)
	case c.tokenFile != "" && stats.ByCredential["jwt:new"] == 0:
		return fmt.Errorf("the upstream never saw the rotated token")
	}
	fmt.Println("OK")
	return nil
}

// requestBody is a streamed chat completion request of about size bytes:
// a conversation, as agents send their whole history every time.
func requestBody(size int) string {
	const head = `{"model":"openai/gpt-4o-mini","stream":true,"messages":[`
	const turn = `{"role":"user","content":"Count slowly; here is what we have so far, line by line."},`
	const last = `{"role":"user","content":"Count slowly."}]}`
	n := max(0, (size-len(head)-len(last))/len(turn))
	return head + strings.Repeat(turn, n) + last
}

// stream runs one streamed completion and reads it to the end; onOpen is
// called when the response headers are in.
func stream(client *http.Client, c config, body string, onOpen func()) (res result) {
	start := time.Now()
	defer func() { res.dur = time.Since(start) }()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.opened = true
	onOpen()
	if resp.StatusCode != http.StatusOK {
		res.err = fmt.Errorf("HTTP %d", resp.StatusCode)
		return res
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return res
		}
		if strings.Contains(data, `"choices":[]`) {
			continue // the usage chunk the upstream sends last, not a content chunk
		}
		if res.chunks == 0 {
			res.first = time.Since(start)
		}
		res.chunks++
	}
	if err := sc.Err(); err != nil {
		res.err = fmt.Errorf("after %d chunks: %v", res.chunks, err)
	} else {
		res.err = fmt.Errorf("stream ended after %d chunks without [DONE]", res.chunks)
	}
	return res
}

// rotate replaces the token file (atomically, as a deploy would) with a
// token that expires later, then sends a request every 100 ms until the
// upstream sees the new token.
func rotate(client *http.Client, c config, openNow int64) (string, error) {
	tok, err := benchtoken.New("new", 2*time.Hour)
	if err != nil {
		return "", err
	}
	// the upstream lives across rounds: count only this round's uses
	before, err := upstreamStats(client, c.statsURL)
	if err != nil {
		return "", err
	}
	tmp := filepath.Join(filepath.Dir(c.tokenFile), ".token.tmp")
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, c.tokenFile); err != nil {
		return "", err
	}
	rotated := time.Now()
	for time.Since(rotated) < 10*time.Second {
		time.Sleep(100 * time.Millisecond)
		req, _ := http.NewRequest(http.MethodPost, c.url, strings.NewReader(`{"model":"openai/gpt-4o-mini"}`))
		req.Header.Set("Authorization", "Bearer "+c.key)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
		}
		if s, err := upstreamStats(client, c.statsURL); err == nil && s.ByCredential["jwt:new"] > before.ByCredential["jwt:new"] {
			return fmt.Sprintf("token file rotated with %d streams open; new token in use after %.1fs",
				openNow, time.Since(rotated).Seconds()), nil
		}
	}
	return "", fmt.Errorf("the proxy did not pick up the rotated token within 10s")
}

type stats struct {
	Mismatches   int64            `json:"mismatches"`
	ByCredential map[string]int64 `json:"by_credential"`
}

func upstreamStats(client *http.Client, url string) (stats, error) {
	var s stats
	resp, err := client.Get(url)
	if err != nil {
		return s, fmt.Errorf("upstream stats: %v", err)
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// memKB reads a VmRSS/VmHWM line of /proc/<pid>/status, in KiB.
func memKB(pid int, field string) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// sampleRSS keeps the highest VmRSS seen, every 250 ms, until stopped.
func sampleRSS(pid int, peak *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if v := memKB(pid, "VmRSS"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

func storeMax(m *atomic.Int64, v int64) {
	for old := m.Load(); v > old && !m.CompareAndSwap(old, v); old = m.Load() {
	}
}
