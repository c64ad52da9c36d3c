//go:build !race

package examples

// raceEnabled is true when the tests are built with -race.
const raceEnabled = false
