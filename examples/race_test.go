//go:build race

package examples

// raceEnabled is true when the tests are built with -race; ./try.sh then
// builds with -race too, so that it reuses what the integration tests
// compile instead of compiling Caddy a second time.
const raceEnabled = true
