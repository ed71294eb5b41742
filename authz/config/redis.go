package config

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the store replicas share: a second-level token cache, the DPoP
// replay store and the revocation channel. Off while URL is empty.
type Redis struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS.
	URL string `yaml:"url"`
	// PasswordFile holds the password (replaces the URL's).
	PasswordFile string `yaml:"password_file"`
	// CAFile is a PEM bundle for rediss:// (replaces the system roots).
	CAFile string `yaml:"ca_file"`
	// KeyPrefix starts every key phantom-authz writes.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds each operation (dial, read, write).
	Timeout Duration `yaml:"timeout"`
	// TokenCache shares resolved tokens between replicas.
	TokenCache bool `yaml:"token_cache"`
	// CacheKeyFile holds the secret that authenticates the shared token
	// cache's entries (at least 32 bytes, the same on every replica);
	// required while the token cache is on.
	CacheKeyFile string `yaml:"cache_key_file"`
	// ReplayStore keeps DPoP proof jtis in Redis, shared by all replicas.
	ReplayStore bool `yaml:"replay_store"`
	// ReplayFailOpen: with Redis unreachable, DPoP replays are checked by
	// each replica's memory instead of DPoP requests being refused (503).
	ReplayFailOpen bool `yaml:"replay_fail_open"`
	// RevocationChannel is the pub/sub channel revocations travel on.
	RevocationChannel string `yaml:"revocation_channel"`
	// Password is the content of PasswordFile (white space trimmed), read
	// by Validate.
	Password string `yaml:"-" secret:"true"`
	// CacheKey is the content of CacheKeyFile (surrounding white space
	// trimmed), read by Validate.
	CacheKey []byte `yaml:"-" secret:"true"`
}

// MinCacheKey is the shortest redis.cache_key_file secret, in bytes.
const MinCacheKey = 32

// Admin is the administrative endpoints (POST /admin/revoke, and with
// PProf Go's profiles under /debug/pprof/).
type Admin struct {
	// TokenFile holds the bearer credential of the endpoints; empty turns
	// them off (404).
	TokenFile string `yaml:"token_file"`
	// PProf serves net/http/pprof's profiles under /debug/pprof/ on the
	// HTTP listener, behind the admin credential. Off by default.
	PProf bool `yaml:"pprof"`
	// Token is the content of TokenFile (white space trimmed), read by
	// Validate.
	Token string `yaml:"-" secret:"true"`
}

// minAdminToken is the shortest admin credential accepted.
const minAdminToken = 16

func defaultRedis() Redis {
	return Redis{
		KeyPrefix:         "phantom-authz:",
		Timeout:           Duration(100 * time.Millisecond),
		TokenCache:        true,
		ReplayStore:       true,
		RevocationChannel: "phantom-authz:revocations",
	}
}

// validate checks the redis section and reads the password file.
func (r *Redis) validate() error {
	if r.Timeout <= 0 || r.Timeout > Duration(10*time.Second) {
		return &Error{"redis.timeout", "must be positive and at most 10s"}
	}
	if r.KeyPrefix == "" || strings.ContainsAny(r.KeyPrefix, " \t\r\n") {
		return &Error{"redis.key_prefix", "must be non-empty and contain no white space"}
	}
	if r.RevocationChannel == "" || strings.ContainsAny(r.RevocationChannel, " \t\r\n") {
		return &Error{"redis.revocation_channel", "must be non-empty and contain no white space"}
	}
	if r.ReplayFailOpen && !r.ReplayStore {
		return &Error{"redis.replay_fail_open", "applies to redis.replay_store, which is off"}
	}
	if r.URL == "" {
		if r.PasswordFile != "" || r.CAFile != "" || r.CacheKeyFile != "" {
			return &Error{"redis.url", "must be set when redis.password_file, redis.ca_file or redis.cache_key_file is"}
		}
		return nil
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		// url.Parse's error quotes the URL, password included.
		return &Error{"redis.url", "is not a URL"}
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return &Error{"redis.url", fmt.Sprintf("scheme %q is not redis or rediss", u.Scheme)}
	}
	if u.Hostname() == "" {
		return &Error{"redis.url", fmt.Sprintf("%s must name the host (host:port, port 6379 by default)", u.Redacted())}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return &Error{"redis.url", fmt.Sprintf("%s: the path must be a database number", u.Redacted())}
		}
	}
	if _, err := redis.ParseURL(r.URL); err != nil {
		return &Error{"redis.url", fmt.Sprintf("%s: %v", u.Redacted(), err)}
	}
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return &Error{"redis.password_file", err.Error()}
		}
		r.Password = strings.TrimSpace(string(b))
		if r.Password == "" {
			return &Error{"redis.password_file", "file is empty"}
		}
	}
	if r.TokenCache {
		// Whoever can write to Redis must not be able to write entries the
		// replicas trust: they are authenticated with this secret.
		if r.CacheKeyFile == "" {
			return &Error{"redis.cache_key_file", fmt.Sprintf("required while redis.token_cache is on: a file holding a secret of at least %d bytes, the same on every replica (e.g. openssl rand -base64 48)", MinCacheKey)}
		}
		b, err := os.ReadFile(r.CacheKeyFile)
		if err != nil {
			return &Error{"redis.cache_key_file", err.Error()}
		}
		r.CacheKey = bytes.TrimSpace(b)
		if len(r.CacheKey) < MinCacheKey {
			return &Error{"redis.cache_key_file", fmt.Sprintf("the secret has %d bytes, at least %d are needed (e.g. openssl rand -base64 48)", len(r.CacheKey), MinCacheKey)}
		}
	}
	if r.CAFile != "" {
		if u.Scheme != "rediss" {
			return &Error{"redis.ca_file", "needs a rediss:// url (TLS)"}
		}
		b, err := os.ReadFile(r.CAFile)
		if err != nil {
			return &Error{"redis.ca_file", err.Error()}
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return &Error{"redis.ca_file", "holds no PEM certificate"}
		}
	}
	return nil
}

// validate reads the admin token file.
func (a *Admin) validate() error {
	if a.TokenFile == "" {
		if a.PProf {
			// Profiles show the program's insides and cost CPU: never
			// served without a credential.
			return &Error{"admin.pprof", "needs admin.token_file: the profiles under /debug/pprof/ demand the admin bearer token"}
		}
		return nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return &Error{"admin.token_file", err.Error()}
	}
	a.Token = strings.TrimSpace(string(b))
	if len(a.Token) < minAdminToken {
		return &Error{"admin.token_file", fmt.Sprintf("the token must be at least %d characters", minAdminToken)}
	}
	if strings.ContainsAny(a.Token, " \t\r\n") {
		return &Error{"admin.token_file", "the token must be one line without white space"}
	}
	return nil
}
