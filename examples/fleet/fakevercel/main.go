// Command fakevercel is a stand-in for the one Vercel API call the proxy
// makes, for examples/fleet/run.sh: POST /v1/projects/<project>/token
// answers {"token":"<jwt>"} with a Vercel-OIDC-shaped token that expires
// after -ttl (signed with a throwaway key: the proxy reads its exp, and
// the fake upstream checks nothing). GET /stats reports how many tokens
// were minted, so a fleet sharing one storage can be seen to mint once
// per rotation. It listens on loopback only.
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address (loopback)")
	ttl := flag.Duration("ttl", 20*time.Second, "lifetime of a minted token")
	flag.Parse()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		log.Fatal(err)
	}
	var mints atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/projects/{project}/token", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, `{"error":{"code":"forbidden","message":"no access token"}}`, http.StatusForbidden)
			return
		}
		team := r.URL.Query().Get("teamId")
		now := time.Now()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss":         "https://oidc.vercel.com/" + team,
			"aud":         "https://vercel.com/" + team,
			"sub":         "owner:" + team + ":project:" + r.PathValue("project") + ":environment:development",
			"owner_id":    team,
			"project_id":  r.PathValue("project"),
			"environment": "development",
			"iat":         now.Unix(),
			"nbf":         now.Unix(),
			"exp":         now.Add(*ttl).Unix(),
		}).SignedString(key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n := mints.Add(1)
		log.Printf("mint %d for project %s, expires %s", n, r.PathValue("project"), now.Add(*ttl).UTC().Format(time.TimeOnly))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"mints": mints.Load()})
	})
	log.Printf("fake Vercel token API on http://%s (tokens live %s)", *addr, *ttl)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
