package policy

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long Watch waits after a file event before reloading, so an
// editor's or a deployment's burst of writes becomes one reload.
const settle = 100 * time.Millisecond

// Watch reloads the policy set whenever the files under Dir change, until
// ctx ends; run it in its own goroutine. It is notified of changes anywhere
// in the tree (new directories included) and also re-reads the directory
// every PollInterval, comparing a content hash, for file systems that do not
// notify. A change that does not load or compile is refused: the last good
// set keeps serving, the error is logged with its file and line, and the
// failed-reload count rises (once per distinct content).
//
// With a bundle configured, Watch polls the bundle server instead (see
// BundleConfig): every download or activation that fails is logged and
// counted, and the last good set keeps serving.
func (e *Engine) Watch(ctx context.Context) {
	if e.bundle != nil {
		e.bundle.run(ctx)
		return
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err != nil {
		e.log.Warn("policy: file notifications unavailable, polling only", "dir", e.dir, "error", err)
	} else {
		defer w.Close()
		e.watchTree(w, e.dir, 0)
		events, errs = w.Events, w.Errors
	}

	poll := time.NewTicker(e.pollInterval)
	defer poll.Stop()
	debounce := time.NewTimer(settle)
	debounce.Stop()
	defer debounce.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Has(fsnotify.Create) {
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
					e.watchTree(w, ev.Name, 1)
				}
			}
			debounce.Reset(settle)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			e.log.Warn("policy: file notification error, polling continues", "dir", e.dir, "error", err)
		case <-debounce.C:
			e.reloadIfChanged(ctx)
		case <-poll.C:
			e.reloadIfChanged(ctx)
		}
	}
}

// watchTree adds dir and the directories below it (following symlinks, as
// the loader does) to w.
func (e *Engine) watchTree(w *fsnotify.Watcher, dir string, depth int) {
	if depth > maxDirDepth {
		return
	}
	if err := w.Add(dir); err != nil {
		e.log.Warn("policy: cannot watch directory, polling covers it", "dir", dir, "error", err)
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, ent := range entries {
		if strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, ent.Name())
		if info, err := os.Stat(path); err == nil && info.IsDir() {
			e.watchTree(w, path, depth+1)
		}
	}
}

// reloadIfChanged reloads the set when the files differ from the ones being
// served and from the last ones refused.
func (e *Engine) reloadIfChanged(ctx context.Context) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()

	cur := e.set.Load()
	snap, err := takeSnapshot(e.dir)
	if err != nil {
		e.refuse("read:"+err.Error(), err, cur)
		return
	}
	if cur != nil && snap.hash == cur.hash {
		e.failedKey = "" // back to the served files: report the next failure again
		return
	}
	key := hex.EncodeToString(snap.hash[:])
	if key == e.failedKey {
		return
	}
	set, err := loadSnapshot(ctx, e.dir, e.query, snap)
	if err != nil {
		e.refuse(key, err, cur)
		return
	}
	e.set.Store(set)
	e.failedKey = ""
	e.reloadsOK.Add(1)
	e.log.Info("policy: reloaded", "dir", e.dir, "revision", set.revision)
}

// refuse records a failed reload once per distinct cause.
func (e *Engine) refuse(key string, err error, serving *policySet) {
	if key == e.failedKey {
		return
	}
	e.failedKey = key
	e.reloadsFailed.Add(1)
	revision := ""
	if serving != nil {
		revision = serving.revision
	}
	e.log.Error("policy: reload refused, keeping the last good policy set",
		"dir", e.dir, "serving_revision", revision, "error", err.Error())
}
