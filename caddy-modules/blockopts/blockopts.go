// Package blockopts parses the Caddyfile shapes our directives share: a
// directive with no arguments and a block of options that each take exactly
// one value, given at most once, and options that name a guest module.
//
//	directive {
//	    name value
//	    other <module> [<args>...] {
//	        <the module's options>
//	    }
//	}
package blockopts

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Parse reads the directive at d into the string fields opts names. An
// unknown option, a missing or extra value, or an option given twice is an
// error that points at the token.
func Parse(d *caddyfile.Dispenser, opts map[string]*string) error {
	return ParseWith(d, opts, nil)
}

// ParseWith is Parse with options of other shapes: each function in
// special reads its option at d (a nested block, a flag, a duration).
func ParseWith(d *caddyfile.Dispenser, opts map[string]*string, special map[string]func(*caddyfile.Dispenser) error) error {
	d.Next() // the directive name
	directive := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if read, ok := special[opt]; ok {
			if err := read(d); err != nil {
				return err
			}
			continue
		}
		dst, ok := opts[opt]
		if !ok {
			return d.Errf("unrecognized %s option %q", directive, opt)
		}
		if err := Value(d, dst); err != nil {
			return err
		}
	}
	return nil
}

// Duration reads the single value of the option at d, a Caddy duration
// (72h, 1d), into dst.
func Duration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var v string
	if err := Value(d, &v); err != nil {
		return err
	}
	t, err := caddy.ParseDuration(v)
	if err != nil {
		return d.Errf("%s: %v", opt, err)
	}
	*dst = caddy.Duration(t)
	return nil
}

// Flag reads an option that takes no value: present, dst is true.
func Flag(d *caddyfile.Dispenser, dst *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = true
	return nil
}

// Value reads the single value of the option at d into dst, which must not
// be set yet.
func Value(d *caddyfile.Dispenser, dst *string) error {
	opt := d.Val()
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
	return nil
}

// Module reads `<option> <module> ...` at d, a module of namespace with
// its own Caddyfile tokens, into *dst as the JSON of that module with its
// name under inlineKey. dst must not be set yet.
func Module(d *caddyfile.Dispenser, namespace, inlineKey string, dst *json.RawMessage) error {
	opt := d.Val()
	if !d.NextArg() {
		return d.ArgErr()
	}
	if *dst != nil {
		return d.Errf("%s already specified", opt)
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, namespace+"."+name)
	if err != nil {
		return err
	}
	*dst = caddyconfig.JSONModuleObject(unm, inlineKey, name, nil)
	return nil
}
