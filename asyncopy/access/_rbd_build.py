"""cffi build script for ``asyncopy.access._librbd``: the librados and librbd calls asyncopy makes.

Compiled at install time against librados-dev and librbd-dev (API mode: layouts come from
the headers). Asynchronous requests are made with completions that have no callback: librbd
queues them on the image and signals an eventfd the event loop waits on
(``rbd_set_image_notification``), so no librbd thread ever runs Python. The one callback,
for ``rbd_diff_iterate2``, runs on the thread that called it. A source's watch on its image
header is all C (``asyncopy_watch_*``): librados calls it on its own threads, it acks each
notification and counts those that say another client took the image's lock.
"""

from cffi import FFI

# A source's header watch: what the C callbacks count, shared by the cdef and the source.
WATCH_STRUCT = """
struct asyncopy_watch {
    rados_ioctx_t io;
    char oid[128];
    uint64_t cookie;
    long notifications;
    long lock_taken;
    long errors;
};
"""

CDEF = (
    """
typedef void *rados_t;
typedef void *rados_ioctx_t;
typedef void *rbd_image_t;
typedef void *rbd_completion_t;
typedef void *rbd_image_options_t;
typedef void (*rbd_callback_t)(rbd_completion_t cb, void *arg);

typedef struct {
    uint64_t size;
    uint64_t obj_size;
    uint64_t num_objs;
    int order;
    ...;
} rbd_image_info_t;

typedef struct {
    char *addr;
    int64_t id;
    uint64_t cookie;
} rbd_image_watcher_t;

#define RBD_FEATURE_EXCLUSIVE_LOCK ...
#define RBD_FEATURE_FAST_DIFF ...
#define RBD_FLAG_FAST_DIFF_INVALID ...
#define EVENTFD_NONBLOCK ...
#define EVENTFD_CLOEXEC ...

static const int EVENT_TYPE_EVENTFD;
static const int RBD_IMAGE_OPTION_FEATURES;
static const int RBD_IMAGE_OPTION_ORDER;
static const int RBD_IMAGE_OPTION_DATA_POOL;
typedef enum { RBD_LOCK_MODE_EXCLUSIVE, ... } rbd_lock_mode_t;

int rados_create(rados_t *cluster, const char *id);
int rados_conf_read_file(rados_t cluster, const char *path);
int rados_conf_set(rados_t cluster, const char *option, const char *value);
int rados_connect(rados_t cluster);
void rados_shutdown(rados_t cluster);
int rados_ioctx_create(rados_t cluster, const char *pool_name, rados_ioctx_t *ioctx);
void rados_ioctx_destroy(rados_ioctx_t io);
void rados_ioctx_set_namespace(rados_ioctx_t io, const char *nspace);
int rados_ioctx_get_namespace(rados_ioctx_t io, char *buf, unsigned maxlen);
int64_t rados_ioctx_get_id(rados_ioctx_t io);
rados_t rados_ioctx_get_cluster(rados_ioctx_t io);
int rados_cluster_fsid(rados_t cluster, char *buf, size_t len);

void rbd_image_options_create(rbd_image_options_t *opts);
void rbd_image_options_destroy(rbd_image_options_t opts);
int rbd_image_options_set_string(rbd_image_options_t opts, int optname, const char *optval);
int rbd_image_options_set_uint64(rbd_image_options_t opts, int optname, uint64_t optval);
int rbd_create4(rados_ioctx_t io, const char *name, uint64_t size, rbd_image_options_t opts);
int rbd_remove(rados_ioctx_t io, const char *name);

int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);
int rbd_open_read_only(rados_ioctx_t io, const char *name, rbd_image_t *image,
                       const char *snap_name);
int rbd_close(rbd_image_t image);
int rbd_stat(rbd_image_t image, rbd_image_info_t *info, size_t infosize);
int rbd_get_features(rbd_image_t image, uint64_t *features);
int rbd_get_flags(rbd_image_t image, uint64_t *flags);
int rbd_get_id(rbd_image_t image, char *id, size_t id_len);
int rbd_lock_acquire(rbd_image_t image, rbd_lock_mode_t lock_mode);
int rbd_watchers_list(rbd_image_t image, rbd_image_watcher_t *watchers, size_t *max_watchers);
void rbd_watchers_list_cleanup(rbd_image_watcher_t *watchers, size_t num_watchers);
int rbd_snap_get_id(rbd_image_t image, const char *snapname, uint64_t *snap_id);
int rbd_snap_exists(rbd_image_t image, const char *snapname, bool *exists);
typedef int (*librbd_progress_fn_t)(uint64_t offset, uint64_t total, void *ptr);
#define RBD_SNAP_CREATE_SKIP_QUIESCE ...
int rbd_snap_create2(rbd_image_t image, const char *snap_name, uint32_t flags,
                     librbd_progress_fn_t cb, void *cbdata);
int rbd_metadata_get(rbd_image_t image, const char *key, char *value, size_t *val_len);
int rbd_metadata_set(rbd_image_t image, const char *key, const char *value);
int rbd_diff_iterate2(rbd_image_t image, const char *fromsnapname, uint64_t ofs, uint64_t len,
                      uint8_t include_parent, uint8_t whole_object,
                      int (*cb)(uint64_t, size_t, int, void *), void *arg);

int rbd_set_image_notification(rbd_image_t image, int fd, int type);
int rbd_poll_io_events(rbd_image_t image, rbd_completion_t *comps, int numcomp);
int rbd_aio_create_completion(void *cb_arg, rbd_callback_t complete_cb, rbd_completion_t *c);
ssize_t rbd_aio_get_return_value(rbd_completion_t c);
void *rbd_aio_get_arg(rbd_completion_t c);
void rbd_aio_release(rbd_completion_t c);
int rbd_aio_read(rbd_image_t image, uint64_t off, size_t len, char *buf, rbd_completion_t c);
int rbd_aio_write(rbd_image_t image, uint64_t off, size_t len, const char *buf,
                  rbd_completion_t c);
int rbd_aio_write_zeroes(rbd_image_t image, uint64_t off, size_t len, rbd_completion_t c,
                         int zero_flags, int op_flags);
int rbd_aio_flush(rbd_image_t image, rbd_completion_t c);

int eventfd(unsigned int initval, int flags);

extern "Python" int asyncopy_diff_extent(uint64_t, size_t, int, void *);

void rados_watch_flush(rados_t cluster);
"""
    + WATCH_STRUCT
    + """int asyncopy_watch_start(struct asyncopy_watch *watch);
int asyncopy_watch_stop(struct asyncopy_watch *watch);
long asyncopy_watch_read(long *counter);
"""
)

SOURCE = (
    """
#include <sys/eventfd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#define EVENTFD_NONBLOCK EFD_NONBLOCK
#define EVENTFD_CLOEXEC EFD_CLOEXEC
#include <string.h>

"""
    + WATCH_STRUCT
    + """
/* librbd's header notifications (librbd/WatchNotifyTypes.h): ENCODE_START's version, compat
   and length (6 bytes), then the 32-bit little-endian NotifyOp. */
enum { NOTIFY_OP_ACQUIRED_LOCK = 0, NOTIFY_OP_REQUEST_LOCK = 2 };

static void asyncopy_watch_notified(void *arg, uint64_t notify_id, uint64_t cookie,
                                    uint64_t notifier_id, void *data, size_t length) {
    struct asyncopy_watch *watch = arg;
    uint32_t op = 0xffffffff;
    (void)notifier_id;
    if (length >= 10) {
        memcpy(&op, (char *)data + 6, sizeof op);
    }
    __atomic_add_fetch(&watch->notifications, 1, __ATOMIC_SEQ_CST);
    if (op == NOTIFY_OP_ACQUIRED_LOCK || op == NOTIFY_OP_REQUEST_LOCK) {
        __atomic_add_fetch(&watch->lock_taken, 1, __ATOMIC_SEQ_CST);
    }
    rados_notify_ack(watch->io, watch->oid, notify_id, cookie, NULL, 0);
}

static void asyncopy_watch_failed(void *arg, uint64_t cookie, int err) {
    struct asyncopy_watch *watch = arg;
    (void)cookie;
    (void)err;
    __atomic_add_fetch(&watch->errors, 1, __ATOMIC_SEQ_CST);
}

static int asyncopy_watch_start(struct asyncopy_watch *watch) {
    return rados_watch2(watch->io, watch->oid, &watch->cookie, asyncopy_watch_notified,
                        asyncopy_watch_failed, watch);
}

static int asyncopy_watch_stop(struct asyncopy_watch *watch) {
    return rados_unwatch2(watch->io, watch->cookie);
}

static long asyncopy_watch_read(long *counter) {
    return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}
"""
)

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source("asyncopy.access._librbd", SOURCE, libraries=["rbd", "rados"])

if __name__ == "__main__":
    ffi.compile(verbose=True)
