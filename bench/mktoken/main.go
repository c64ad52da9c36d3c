// Command mktoken prints a Vercel-OIDC-shaped JWT (unverifiable: signed
// with a throwaway key) for the benchmarks' vercel_oidc source.
package main

import (
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/bench/internal/benchtoken"
)

func main() {
	ttl := flag.Duration("ttl", 24*time.Hour, "lifetime: exp = now + ttl")
	jti := flag.String("jti", "bench", "jti claim (the fake upstream counts requests per jti)")
	flag.Parse()
	tok, err := benchtoken.New(*jti, *ttl)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok)
}
