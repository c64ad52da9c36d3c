//go:build !race

package integration

// raceEnabled is true when the tests are built with -race; the Caddy under
// test is then built with -race too.
const raceEnabled = false
