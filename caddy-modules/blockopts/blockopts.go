// Package blockopts parses the Caddyfile shape our directives share: a
// directive with no arguments and a block of options that each take exactly
// one value, given at most once.
//
//	directive {
//	    name value
//	    ...
//	}
package blockopts

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// Parse reads the directive at d into the string fields opts names. An
// unknown option, a missing or extra value, or an option given twice is an
// error that points at the token.
func Parse(d *caddyfile.Dispenser, opts map[string]*string) error {
	d.Next() // the directive name
	directive := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		dst, ok := opts[opt]
		if !ok {
			return d.Errf("unrecognized %s option %q", directive, opt)
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		if *dst != "" {
			return d.Errf("%s already specified", opt)
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}
