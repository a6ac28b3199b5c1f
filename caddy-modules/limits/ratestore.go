package limits

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/memory"
	redisstore "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/sandboxapi/sandboxapi/caddy-modules/blockopts"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
	caddy.RegisterModule(RedisStore{})
}

// RateStoreNamespace is the Caddy module namespace of rate stores; the
// `store` key of a `rate_store` object names one of them.
const RateStoreNamespace = "sandboxapi.rate_stores"

// defaultRateStore is the module used when the config names no rate store.
const defaultRateStore = RateStoreNamespace + ".memory"

// RateStore is what every module in the sandboxapi.rate_stores namespace
// implements: where the rate windows are counted.
type RateStore interface {
	// Store returns the store to count in. It is called after Provision
	// and must not be used after Cleanup.
	Store() limiter.Store
}

// rateStores holds the stores that the rate store modules hand out, keyed
// by the modules' settings (a memoryKey or a redisKey). Caddy provisions a
// new config before it cleans up the old one, so a reload finds the store
// the old config used and every account keeps its window; a store is
// destroyed when the last config that uses it is cleaned up.
var rateStores = caddy.NewUsagePool()

// pooledStore is a store in rateStores.
type pooledStore struct {
	limiter.Store
	close func() error // nil for a store that holds nothing but memory
}

// Destruct closes what the store holds.
func (p *pooledStore) Destruct() error {
	if p.close == nil {
		return nil
	}
	return p.close()
}

// pooledRef is a rate store module's hold on a store in rateStores.
type pooledRef struct {
	key   any // nil while the module holds nothing
	store limiter.Store
}

// take gets the store for key from rateStores, building it with build if no
// config holds it yet.
func (r *pooledRef) take(key any, build func() (*pooledStore, error)) error {
	v, _, err := rateStores.LoadOrNew(key, func() (caddy.Destructor, error) { return build() })
	if err != nil {
		return err
	}
	r.key, r.store = key, v.(*pooledStore).Store
	return nil
}

// release gives the store back; the last release destroys it.
func (r *pooledRef) release() error {
	if r.key == nil {
		return nil
	}
	_, err := rateStores.Delete(r.key)
	r.key, r.store = nil, nil
	if err != nil {
		return fmt.Errorf("sandboxapi_limits: closing rate store: %w", err)
	}
	return nil
}

// MemoryStore is the rate store module sandboxapi.rate_stores.memory, the
// default: windows kept in this process, right for a single gateway. They
// survive config reloads and are lost when Caddy stops.
type MemoryStore struct {
	// Prefix namespaces the keys. Handlers whose stores have the same
	// prefix share one store and so one window per account; empty means
	// the default prefix.
	Prefix string `json:"prefix,omitempty"`

	ref pooledRef
}

type memoryKey struct{ prefix string }

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  defaultRateStore,
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// Provision takes the store for this prefix, which an earlier config may
// still hold.
func (m *MemoryStore) Provision(caddy.Context) error {
	prefix := cmp.Or(m.Prefix, rateStorePrefix)
	return m.ref.take(memoryKey{prefix}, func() (*pooledStore, error) {
		// No close: the store's cleaner goroutine stops when the store is
		// garbage collected.
		return &pooledStore{Store: memory.NewStoreWithOptions(limiter.StoreOptions{
			Prefix:          prefix,
			CleanUpInterval: limiter.DefaultCleanUpInterval,
		})}, nil
	})
}

// Cleanup gives the store back.
func (m *MemoryStore) Cleanup() error { return m.ref.release() }

// Store returns the in-memory store.
func (m *MemoryStore) Store() limiter.Store { return m.ref.store }

// UnmarshalCaddyfile sets up the store from Caddyfile tokens:
//
//	memory {
//	    prefix <prefix>
//	}
func (m *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return blockopts.Parse(d, map[string]*string{"prefix": &m.Prefix})
}

// RedisStore is the rate store module sandboxapi.rate_stores.redis:
// windows kept in Redis with ulule/limiter's Redis driver, so that several
// gateways count each account once.
//
// Provision does not connect: a config load, at startup or on reload, must
// neither wait for Redis nor fail because it is down, since sandboxapi_limits
// lets requests through (and logs) while the rate store fails, and the
// monthly quota still holds. The driver's first use, when Redis answers,
// loads its scripts. A wrong address therefore shows as those logged errors,
// not as a config that will not load.
type RedisStore struct {
	// Address is the host:port of the Redis server. Required.
	Address string `json:"address,omitempty"`
	// Password authenticates to Redis; empty for none.
	Password string `json:"password,omitempty"`
	// DB is the Redis database number.
	DB int `json:"db,omitempty"`
	// Prefix namespaces the keys in a Redis that others may use too; empty
	// means the default prefix.
	Prefix string `json:"prefix,omitempty"`

	key redisKey // the settings with placeholders replaced
	ref pooledRef
}

// redisTimeout bounds each step of talking to Redis (dial, read, write).
const redisTimeout = 250 * time.Millisecond

// redisKey is a Redis store's settings; configs with the same settings share
// one client.
type redisKey struct {
	address, password string
	db                int
	prefix            string
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  RateStoreNamespace + ".redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// Provision takes the client for these settings, which an earlier config
// may still hold. Address, password and prefix may use {env.*} and
// {file.*} placeholders, so the password need not be in the config.
func (r *RedisStore) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	r.key = redisKey{
		address:  repl.ReplaceKnown(r.Address, ""),
		password: repl.ReplaceKnown(r.Password, ""),
		db:       r.DB,
		prefix:   cmp.Or(repl.ReplaceKnown(r.Prefix, ""), rateStorePrefix),
	}
	k := r.key
	return r.ref.take(k, func() (*pooledStore, error) {
		client := redis.NewClient(&redis.Options{
			Addr: k.address, Password: k.password, DB: k.db,
			// The rate check is on the path of every request, and one that
			// fails lets the request through: retrying or waiting long for
			// a Redis that is down would only delay every request. A Redis
			// near the gateway answers well within these timeouts.
			MaxRetries:    -1,
			DialerRetries: 1,
			DialTimeout:   redisTimeout,
			ReadTimeout:   redisTimeout,
			WriteTimeout:  redisTimeout,
		})
		return &pooledStore{Store: &lazyRedisStore{client: client, prefix: k.prefix}, close: client.Close}, nil
	})
}

// Validate reports settings that cannot work. Caddy cleans up a module
// that fails it, which gives back the client Provision took.
func (r *RedisStore) Validate() error {
	k := r.key
	if k.address == "" {
		return fmt.Errorf("%w: redis rate store: address is required", ErrConfig)
	}
	if host, port, err := net.SplitHostPort(k.address); err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: redis rate store: address %q is not host:port", ErrConfig, k.address)
	}
	if k.db < 0 {
		return fmt.Errorf("%w: redis rate store: db %d is negative", ErrConfig, k.db)
	}
	return nil
}

// Cleanup gives the client back; the last config to do so closes it.
func (r *RedisStore) Cleanup() error { return r.ref.release() }

// Store returns the Redis store.
func (r *RedisStore) Store() limiter.Store { return r.ref.store }

// UnmarshalCaddyfile sets up the store from Caddyfile tokens:
//
//	redis {
//	    address  <host:port>
//	    password <password>
//	    db       <number>
//	    prefix   <prefix>
//	}
func (r *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	var db string
	if err := blockopts.Parse(d, map[string]*string{
		"address":  &r.Address,
		"password": &r.Password,
		"db":       &db,
		"prefix":   &r.Prefix,
	}); err != nil {
		return err
	}
	if db == "" {
		return nil
	}
	n, err := strconv.Atoi(db)
	if err != nil || n < 0 {
		return d.Errf("redis db %q is not a database number", db)
	}
	r.DB = n
	return nil
}

// lazyRedisStore is ulule's Redis store, built on first use because
// building it loads its scripts into Redis (see RedisStore). Until that
// works, every call fails, and sandboxapi_limits fails open.
type lazyRedisStore struct {
	client *redis.Client
	prefix string
	built  atomic.Pointer[limiter.Store]
}

func (s *lazyRedisStore) store() (limiter.Store, error) {
	if st := s.built.Load(); st != nil {
		return *st, nil
	}
	// Concurrent first calls may each build one; they are interchangeable.
	st, err := redisstore.NewStoreWithOptions(s.client, limiter.StoreOptions{Prefix: s.prefix})
	if err != nil {
		return nil, fmt.Errorf("sandboxapi_limits: redis rate store: %w", err)
	}
	s.built.Store(&st)
	return st, nil
}

func (s *lazyRedisStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.with(func(st limiter.Store) (limiter.Context, error) { return st.Get(ctx, key, rate) })
}

func (s *lazyRedisStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.with(func(st limiter.Store) (limiter.Context, error) { return st.Peek(ctx, key, rate) })
}

func (s *lazyRedisStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.with(func(st limiter.Store) (limiter.Context, error) { return st.Reset(ctx, key, rate) })
}

func (s *lazyRedisStore) Increment(ctx context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	return s.with(func(st limiter.Store) (limiter.Context, error) { return st.Increment(ctx, key, count, rate) })
}

// with calls f with the built store.
func (s *lazyRedisStore) with(f func(limiter.Store) (limiter.Context, error)) (limiter.Context, error) {
	st, err := s.store()
	if err != nil {
		return limiter.Context{}, err
	}
	return f(st)
}

// Interface guards.
var (
	_ RateStore             = (*MemoryStore)(nil)
	_ caddy.Provisioner     = (*MemoryStore)(nil)
	_ caddy.CleanerUpper    = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
	_ RateStore             = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddy.CleanerUpper    = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
	_ limiter.Store         = (*lazyRedisStore)(nil)
	_ caddy.Destructor      = (*pooledStore)(nil)
)
