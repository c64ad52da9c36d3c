package caddymodule

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Every Caddyfile block of the module is parsed through one options
// table: the parser dispatches on it, its "unrecognized option" errors
// list it, and the docs test holds docs/caddyfile.md to the same tables
// (caddyfileBlocks), so an option cannot be added without its doc, nor
// documented without being accepted.

// option is one option of a block: its name and how to parse its line
// (the dispenser is on the option's name).
type option[T any] struct {
	name  string
	parse func(d *caddyfile.Dispenser, v *T) error
}

// options is a block's options, in the order the docs list them.
type options[T any] struct {
	block string // the block's name in messages and in the docs
	list  []option[T]
}

// caddyfileBlocks is every block's option names, by block name: what the
// docs test reads.
var caddyfileBlocks = map[string][]string{}

// newOptions makes a block's table and records its names.
func newOptions[T any](block string, list ...option[T]) options[T] {
	names := make([]string, len(list))
	for i, o := range list {
		names[i] = o.name
	}
	caddyfileBlocks[block] = names
	return options[T]{block: block, list: list}
}

// parseBlock parses the block that follows the current token.
func (o options[T]) parseBlock(d *caddyfile.Dispenser, v *T) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := o.parseOne(d, v, "unrecognized "+o.block+" option"); err != nil {
			return err
		}
	}
	return nil
}

// parseOne parses the option the dispenser is on; unknown says how an
// unknown name is reported.
func (o options[T]) parseOne(d *caddyfile.Dispenser, v *T, unknown string) error {
	name := d.Val()
	for _, opt := range o.list {
		if opt.name == name {
			return opt.parse(d, v)
		}
	}
	return d.Errf("%s '%s' (expected %s)", unknown, name, o.expected())
}

// expected lists the names: "a, b or c".
func (o options[T]) expected() string {
	var b strings.Builder
	for i, opt := range o.list {
		switch {
		case i == 0:
		case i == len(o.list)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(opt.name)
	}
	return b.String()
}
