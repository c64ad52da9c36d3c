package replay

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzReplayCopy: whatever the body (its size, whether its length is
// known), the reads the upstream makes (their sizes, how much it reads
// before its status) and the budget, a held 401 either yields a replay
// body that reads exactly like the original, or says why not, and only
// for a reason that holds (over retry_body_limit, or a copy the budget
// could not hold); any other status drops the copy at once; and the
// budget is back to zero when the attempt ends.
func FuzzReplayCopy(f *testing.F) {
	// The body is made from its length: a []byte argument of agent size
	// would make the fuzzer spend its time minimizing it.
	f.Add(uint32(70), true, []byte{255}, uint32(70), uint32(1<<20), uint32(0), true)
	f.Add(uint32(40000), false, []byte{1, 200, 7}, uint32(20000), uint32(1<<20), uint32(0), true)
	f.Add(uint32(40000), true, []byte{64}, uint32(0), uint32(1<<20), uint32(32<<10), true)
	f.Add(uint32(20000), true, []byte{16}, uint32(10000), uint32(16<<10), uint32(0), false)
	f.Add(uint32(0), true, []byte{}, uint32(0), uint32(1), uint32(1), true)
	f.Fuzz(func(t *testing.T, bodyLen uint32, known bool, reads []byte, statusAt, limit, fixed uint32, unauthorized bool) {
		if bodyLen > 1<<20 || limit == 0 {
			return
		}
		body := make([]byte, bodyLen)
		for i := range body {
			body[i] = byte(i ^ i>>8 ^ i>>16) // no two chunks alike
		}
		var rd io.Reader = bytes.NewReader(body)
		if !known {
			rd = unknownLength{rd}
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", rd)
		budget := NewBudget(int64(fixed), int64(limit))
		budget.Enter()
		a := Begin(httptest.NewRecorder(), r, int64(limit), budget)

		// the upstream reads up to statusAt bytes, in reads of the given
		// sizes (each 1..256 KiB), then answers
		buf := make([]byte, 256<<10)
		read := 0
		for i := 0; read < int(statusAt) && read < len(body); i++ {
			size := 4096
			if len(reads) > 0 {
				size = (int(reads[i%len(reads)]) + 1) * 1024
			}
			n, err := r.Body.Read(buf[:min(size, int(statusAt)-read)])
			read += n
			if err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if !unauthorized {
			a.rw.WriteHeader(http.StatusOK)
			if u := budget.used.Load(); u != 0 {
				t.Fatalf("%d bytes reserved after a 200", u)
			}
			a.End()
			return
		}
		a.rw.WriteHeader(http.StatusUnauthorized)
		rc, err := a.body.replayable()
		switch {
		case err == nil:
			got, _ := io.ReadAll(rc)
			if !bytes.Equal(got, body) {
				t.Fatalf("replay body: %d bytes, want the %d-byte body", len(got), len(body))
			}
			if int64(len(body)) > int64(limit) {
				t.Fatalf("a %d-byte body replayed over the %d-byte limit", len(body), limit)
			}
		case errors.Is(err, ErrBodyTooLarge):
			if int64(len(body)) <= int64(limit) {
				t.Fatalf("a %d-byte body refused as over the %d-byte limit", len(body), limit)
			}
		case errors.Is(err, ErrMemory):
			// alone in flight, a body within the limit always fits the
			// auto budget, and a fixed one when its copy does
			size := max(r.ContentLength, 0)
			if need := memory(size, max(size, int64(len(body)))); fixed == 0 || need <= int64(fixed) {
				t.Fatalf("a %d-byte body (copy of %d bytes) found the budget (%d) in use with nothing else in flight", len(body), need, budget.Limit())
			}
		default:
			t.Fatalf("replayable: %v", err)
		}
		a.End()
		budget.Leave()
		if u, o := budget.used.Load(), budget.open.Load(); u != 0 || o != 0 {
			t.Fatalf("after the attempt: %d bytes reserved, %d in flight", u, o)
		}
	})
}

// unknownLength hides a reader's length from http.NewRequest (as a
// chunked upload's): Content-Length is -1.
type unknownLength struct{ io.Reader }
