package share

import (
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

// fdFile is a host file descriptor shared by concurrent requests: do
// runs with the descriptor pinned, and a close meanwhile (FORGET,
// RELEASE) only marks it closed, the descriptor being closed when the
// last do returns, so a request can never act on a descriptor number
// reused by another file. After close, do fails with EBADF.
//
// It counts its own references rather than wrapping an *os.File, which
// does the same but costs an fcntl(F_GETFL) when made, a finalizer and
// three allocations: a share creates one for every file the guest looks
// up or opens, several per file of a build.
type fdFile struct{ r *fdRef }

type fdRef struct {
	mu     sync.Mutex
	fd     int
	sys    rawsys.Calls // how fd is closed
	pins   int          // do calls under way
	closed bool         // close was called; the last do closes fd
}

func newFDFile(fd int, sys rawsys.Calls) fdFile { return fdFile{&fdRef{fd: fd, sys: sys}} }

// do runs fn with the descriptor.
func (h fdFile) do(fn func(fd int) error) error {
	r := h.r
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return unix.EBADF
	}
	r.pins++
	fd := r.fd
	r.mu.Unlock()
	defer h.unpin()
	return fn(fd)
}

func (h fdFile) unpin() {
	r := h.r
	r.mu.Lock()
	r.pins--
	last := r.closed && r.pins == 0
	r.mu.Unlock()
	if last {
		r.sys.Close(r.fd)
	}
}

// close closes the descriptor, or has the last do under way close it.
// Closing twice is harmless.
func (h fdFile) close() {
	r := h.r
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	now := r.pins == 0
	r.mu.Unlock()
	if now {
		r.sys.Close(r.fd)
	}
}

// devIno identifies a host inode while a descriptor holds it open (the
// inode number cannot be reused until then).
type devIno struct{ dev, ino uint64 }

// node is a file the guest has looked up: an O_PATH descriptor that
// does not follow symlinks, so it may be a symlink itself.
type node struct {
	fdFile
	id   uint64
	key  devIno
	mode uint32 // S_IFMT bits: an inode's type never changes
	refs uint64 // the guest's lookup count, under nodes.mu
}

func (n *node) isDir() bool     { return n.mode == unix.S_IFDIR }
func (n *node) isRegular() bool { return n.mode == unix.S_IFREG }
func (n *node) isSymlink() bool { return n.mode == unix.S_IFLNK }
func (n *node) isDevice() bool  { return n.mode == unix.S_IFCHR || n.mode == unix.S_IFBLK }

// handle is an open file or directory (a FUSE file handle).
type handle struct {
	fdFile
	dir bool
	// mu serializes a directory's seek and getdents pairs.
	mu sync.Mutex
}

// table holds the session's nodes and handles. IDs are never reused
// within a session; node 1 is the root (FUSE_ROOT_ID) and stays.
type table struct {
	mu      sync.Mutex
	nodes   map[uint64]*node
	byKey   map[devIno]*node
	handles map[uint64]*handle
	next    uint64 // next node or handle ID
	// budget counts the descriptors nodes and handles hold, with those
	// of every other share of the same vmm.
	budget *Budget
	// sys makes the descriptors' calls: raw on a local file system
	// (package rawsys).
	sys rawsys.Calls
}

// Budget bounds the host descriptors a guest holds through the nodes
// and open files of every share of one vmm (Options.Budget): a guest
// that only looks files up (find over two mounts; its kernel keeps
// their inodes) must not take, share by share, every descriptor vmm
// has, which its network and its other devices need too.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget is a budget of half the soft RLIMIT_NOFILE (which Go raises
// to the hard limit at start-up), leaving the rest to vmm.
func NewBudget() *Budget { return newBudget(fdBudget()) }

func newBudget(n int) *Budget { return &Budget{max: int64(n)} }

// take counts one descriptor more, unless the budget is spent.
func (b *Budget) take() bool {
	if b.used.Add(1) > b.max {
		b.used.Add(-1)
		return false
	}
	return true
}

// give returns n descriptors.
func (b *Budget) give(n int) { b.used.Add(-int64(n)) }

func newTable(budget *Budget, sys rawsys.Calls) *table {
	t := &table{budget: budget, sys: sys}
	t.clear()
	return t
}

func (t *table) clear() {
	t.nodes = make(map[uint64]*node)
	t.byKey = make(map[devIno]*node)
	t.handles = make(map[uint64]*handle)
	t.next = fuse.FUSE_ROOT_ID + 1
}

// setRoot makes fd, an O_PATH descriptor of the shared directory, node 1.
func (t *table) setRoot(fd int, st *unix.Stat_t) {
	n := &node{fdFile: newFDFile(fd, t.sys), id: fuse.FUSE_ROOT_ID, key: keyOf(st), mode: st.Mode & unix.S_IFMT, refs: 1}
	t.budget.used.Add(1) // the share's own, over the budget or not
	t.mu.Lock()
	t.nodes[n.id] = n
	t.byKey[n.key] = n
	t.mu.Unlock()
}

func keyOf(st *unix.Stat_t) devIno { return devIno{dev: st.Dev, ino: st.Ino} }

// node returns node id, or nil.
func (t *table) node(id uint64) *node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nodes[id]
}

// addNode takes fd, an O_PATH descriptor of the file st describes, and
// returns its node with one more lookup. A file the guest already has a
// node for keeps it (the guest must see one node per inode, or hard
// links and files reached twice would have diverging caches), and fd is
// closed. It fails with ENFILE when the descriptor budget is spent.
func (t *table) addNode(fd int, st *unix.Stat_t) (*node, error) {
	key := keyOf(st)
	t.mu.Lock()
	if n := t.byKey[key]; n != nil {
		n.refs++
		t.mu.Unlock()
		t.sys.Close(fd)
		return n, nil
	}
	if !t.budget.take() {
		t.mu.Unlock()
		t.sys.Close(fd)
		return nil, unix.ENFILE
	}
	n := &node{fdFile: newFDFile(fd, t.sys), id: t.next, key: key, mode: st.Mode & unix.S_IFMT, refs: 1}
	t.next++
	t.nodes[n.id] = n
	t.byKey[key] = n
	t.mu.Unlock()
	return n, nil
}

// forget drops count lookups of node id (FORGET) and closes it when none
// remain. The root is never dropped; unknown IDs are ignored, as FORGET
// has no reply to report them in.
func (t *table) forget(id, count uint64) {
	t.mu.Lock()
	n := t.nodes[id]
	if n == nil || id == fuse.FUSE_ROOT_ID {
		t.mu.Unlock()
		return
	}
	n.refs -= min(count, n.refs)
	if n.refs > 0 {
		t.mu.Unlock()
		return
	}
	delete(t.nodes, id)
	if t.byKey[n.key] == n {
		delete(t.byKey, n.key)
	}
	t.mu.Unlock()
	n.close()
	t.budget.give(1)
}

// addHandle registers fd, an open file or directory, and returns its ID;
// it fails with ENFILE when the descriptor budget is spent.
func (t *table) addHandle(fd int, dir bool) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.budget.take() {
		t.sys.Close(fd)
		return 0, unix.ENFILE
	}
	id := t.next
	t.next++
	t.handles[id] = &handle{fdFile: newFDFile(fd, t.sys), dir: dir}
	return id, nil
}

// handle returns handle id if it is a file (dir false) or a directory
// (dir true), or nil.
func (t *table) handle(id uint64, dir bool) *handle {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.handles[id]
	if h == nil || h.dir != dir {
		return nil
	}
	return h
}

// release closes handle id (RELEASE, RELEASEDIR).
func (t *table) release(id uint64, dir bool) {
	t.mu.Lock()
	h := t.handles[id]
	if h == nil || h.dir != dir {
		t.mu.Unlock()
		return
	}
	delete(t.handles, id)
	t.mu.Unlock()
	h.close()
	t.budget.give(1)
}

// reset closes every node but the root and every handle.
func (t *table) reset() {
	t.mu.Lock()
	nodes, handles := t.nodes, t.handles
	root := nodes[fuse.FUSE_ROOT_ID]
	t.clear()
	if root != nil {
		t.nodes[root.id] = root
		t.byKey[root.key] = root
	}
	t.mu.Unlock()
	closed := 0
	for id, n := range nodes {
		if id != fuse.FUSE_ROOT_ID {
			n.close()
			closed++
		}
	}
	for _, h := range handles {
		h.close()
		closed++
	}
	t.budget.give(closed)
}

// closeAll closes everything, the root included.
func (t *table) closeAll() {
	t.reset()
	t.mu.Lock()
	root := t.nodes[fuse.FUSE_ROOT_ID]
	t.clear()
	t.mu.Unlock()
	if root != nil {
		root.close()
		t.budget.give(1)
	}
}
