"""cffi build script for ``asyncopy.access._libiscsi``: libiscsi, and the pump thread that
drives it.

Compiled at install time against libiscsi-dev (API mode: struct layouts come from the
headers, not from this file).

libiscsi 1.19 is not thread-safe, so one thread owns each context: the pump, written here
in C so that it never takes the GIL. It is the only caller of libiscsi on its context from
``ap_pump_new`` until it exits (the caller configures the context before). Its loop:

- take the requests handed over by ``ap_pump_submit`` (a list under a mutex) and queue
  them in libiscsi; a refused one is answered at once;
- poll the session's socket for what ``iscsi_which_events`` asks, and an eventfd that a
  submission, a break or a stop writes while the pump sleeps (a command queued while the
  pump waits only for readability is then sent without delay);
- ``iscsi_service`` what the socket reports, and once a second ``iscsi_service(ctx, 0)``,
  which is how libiscsi expires commands past the session timeout;
- post the requests that completed to a done list, and write a second eventfd, which the
  event loop waits on, when that list was empty; ``ap_pump_take`` empties it.

The completion callback (C) records the status, the sense key, the residual and libiscsi's
error text in the request, frees the SCSI task (or, for a command that returns data, hands
it to the caller, who frees it), and posts the request.

A break (``ap_pump_break``, or a socket error) stops all socket work for good and answers
every request still in libiscsi with SCSI_STATUS_ERROR and ``held`` set: libiscsi still
points at such a request (not at its buffer any more: no I/O happens after a break) until
the context is destroyed, so its memory must live until the pump exits. ``ap_pump_stop``
makes the pump destroy the context (libiscsi cancels what it still holds), answer whatever
is left, set ``exited`` and return; only then may ``ap_pump_free`` be called.
"""

from cffi import FFI

CDEF = """
struct iscsi_context;
struct iscsi_url {
    char portal[...];
    char target[...];
    char user[...];
    char passwd[...];
    int lun;
    ...;
};
struct scsi_iovec { void *iov_base; size_t iov_len; };
struct scsi_sense { unsigned char error_type; int key; int ascq; ...; };
struct scsi_task {
    int status; int residual_status; size_t residual; struct scsi_sense sense; ...;
};
struct scsi_readcapacity16 {
    uint64_t returned_lba; uint32_t block_length; uint8_t lbppbe; uint8_t lbpme;
    uint8_t lbprz; ...;
};
struct scsi_inquiry_block_limits {
    int wsnz; uint32_t max_xfer_len; uint32_t opt_xfer_len; uint64_t max_ws_len; ...;
};
struct scsi_inquiry_logical_block_provisioning { int lbpu; int lbpws; int lbprz; ...; };
struct scsi_lba_status_descriptor { uint64_t lba; uint32_t num_blocks; int provisioning; ...; };
struct scsi_get_lba_status {
    uint32_t num_descriptors; struct scsi_lba_status_descriptor *descriptors; ...;
};
struct scsi_persistent_reserve_in_read_reservation {
    int reserved; uint64_t reservation_key; unsigned char pr_type; ...;
};

#define SCSI_STATUS_GOOD ...
#define SCSI_STATUS_CHECK_CONDITION ...
#define SCSI_STATUS_RESERVATION_CONFLICT ...
#define SCSI_STATUS_CANCELLED ...
#define SCSI_STATUS_ERROR ...
#define SCSI_STATUS_TIMEOUT ...
#define SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS ...
#define SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING ...
#define SCSI_PERSISTENT_RESERVE_READ_RESERVATION ...
#define SCSI_PERSISTENT_RESERVE_REGISTER ...
#define SCSI_PERSISTENT_RESERVE_RESERVE ...
#define SCSI_PERSISTENT_RESERVE_RELEASE ...
#define SCSI_PERSISTENT_RESERVE_PREEMPT ...
#define SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE ...
#define ISCSI_SESSION_NORMAL ...
#define ISCSI_HEADER_DIGEST_NONE_CRC32C ...
#define ISCSI_IMMEDIATE_DATA_NO ...
#define ISCSI_IMMEDIATE_DATA_YES ...
#define ISCSI_INITIAL_R2T_NO ...
#define ISCSI_INITIAL_R2T_YES ...

struct iscsi_context *iscsi_create_context(const char *initiator_name);
int iscsi_destroy_context(struct iscsi_context *iscsi);
int iscsi_set_timeout(struct iscsi_context *iscsi, int timeout);
void iscsi_set_noautoreconnect(struct iscsi_context *iscsi, int state);
int iscsi_set_targetname(struct iscsi_context *iscsi, const char *targetname);
int iscsi_set_session_type(struct iscsi_context *iscsi, int session_type);
int iscsi_set_header_digest(struct iscsi_context *iscsi, int header_digest);
int iscsi_set_immediate_data(struct iscsi_context *iscsi, int immediate_data);
int iscsi_set_initial_r2t(struct iscsi_context *iscsi, int initial_r2t);
int iscsi_set_initiator_username_pwd(struct iscsi_context *iscsi, const char *user,
                                     const char *passwd);

void scsi_free_scsi_task(struct scsi_task *task);
void *scsi_datain_unmarshall(struct scsi_task *task);
const char *scsi_sense_key_str(int key);
const char *scsi_sense_ascq_str(int ascq);

#define AP_CONNECT ...
#define AP_LOGOUT ...
#define AP_READ16 ...
#define AP_WRITE16 ...
#define AP_WRITE_SAME16_ZERO ...
#define AP_GET_LBA_STATUS ...
#define AP_SYNCHRONIZE_CACHE16 ...
#define AP_READ_CAPACITY16 ...
#define AP_INQUIRY_VPD ...
#define AP_PR_IN ...
#define AP_PR_OUT ...
#define AP_ZERO_BLOCK_MAX ...

struct ap_request {
    /* what to do: set by the caller before ap_pump_submit, then not touched until taken */
    int op;
    int lun;
    uint64_t lba;
    uint32_t datalen;        /* READ/WRITE bytes; allocation length for data-in commands */
    int blocksize;
    uint32_t blocks;         /* WRITE SAME */
    int unmap;               /* WRITE SAME */
    int page;                /* INQUIRY VPD page */
    int action;              /* PERSISTENT RESERVE IN/OUT: service action */
    int pr_type;             /* PERSISTENT RESERVE OUT: type */
    uint64_t key;            /* PERSISTENT RESERVE OUT: reservation key */
    uint64_t sa_key;         /* PERSISTENT RESERVE OUT: service action reservation key */
    char portal[256];        /* CONNECT */
    struct scsi_iovec iov;   /* READ/WRITE: the caller's buffer */
    uint64_t id;
    /* how it ended: set by the pump before it is posted */
    int status;
    int sense_key;
    int sense_ascq;
    size_t residual;
    struct scsi_task *task;  /* a data-in reply (GOOD only): the caller frees it */
    int held;                /* libiscsi still points at this request until the pump exits */
    char error[256];
    ...;
};

struct ap_pump;
struct ap_pump *ap_pump_new(struct iscsi_context *iscsi);
int ap_pump_fd(struct ap_pump *p);
void ap_pump_submit(struct ap_pump *p, struct ap_request *r);
int ap_pump_take(struct ap_pump *p, struct ap_request **out, int max, int *exited);
void ap_pump_break(struct ap_pump *p, const char *reason);
void ap_pump_stop(struct ap_pump *p);
int ap_pump_exited(struct ap_pump *p);
void ap_pump_free(struct ap_pump *p);
int ap_unit_serial(void *page, char *out, size_t size);
int ap_lu_designators(void *page, char *out, size_t size);
#define SCSI_INQUIRY_PAGECODE_UNIT_SERIAL_NUMBER ...
#define SCSI_INQUIRY_PAGECODE_DEVICE_IDENTIFICATION ...
"""

SOURCE = r"""
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define AP_CONNECT 1
#define AP_LOGOUT 2
#define AP_READ16 3            /* from here on, SCSI commands: the callback gets a task */
#define AP_WRITE16 4
#define AP_WRITE_SAME16_ZERO 5
#define AP_SYNCHRONIZE_CACHE16 6
#define AP_GET_LBA_STATUS 7    /* from here on, data-in replies handed to the caller */
#define AP_READ_CAPACITY16 8
#define AP_INQUIRY_VPD 9
#define AP_PR_IN 10            /* the last with a data-in reply */
#define AP_PR_OUT 11
#define AP_LAST AP_PR_OUT
#define AP_ZERO_BLOCK_MAX 65536
#define AP_TICK_MS 1000
#define AP_TEXT 256

enum ap_state { AP_NEW, AP_IN_LIBISCSI, AP_POSTED, AP_ANSWERED_HELD };

struct ap_pump;

struct ap_request {
    int op;
    int lun;
    uint64_t lba;
    uint32_t datalen;
    int blocksize;
    uint32_t blocks;
    int unmap;
    int page;
    int action;
    int pr_type;
    uint64_t key;
    uint64_t sa_key;
    char portal[AP_TEXT];
    struct scsi_iovec iov;
    uint64_t id;
    int status;
    int sense_key;
    int sense_ascq;
    size_t residual;
    struct scsi_task *task;
    int held;
    char error[AP_TEXT];
    /* the pump's own */
    int state;
    struct ap_pump *pump;
    struct ap_request *next, *prev;
};

struct ap_pump {
    struct iscsi_context *iscsi;
    pthread_mutex_t lock;
    int wake_fd;                    /* written to wake the pump from poll */
    int done_fd;                    /* written when the done list stops being empty */
    /* under lock */
    struct ap_request *submitted, *submitted_tail;
    struct ap_request *done, *done_tail;
    int sleeping, stop, break_asked, exited;
    char break_reason[AP_TEXT];
    /* the pump thread's own */
    struct ap_request *inflight;    /* in libiscsi, doubly linked */
    struct ap_request *posting, *posting_tail;
    int broken;
    char failure[AP_TEXT];
};

static const unsigned char ap_zeros[AP_ZERO_BLOCK_MAX];

static void ap_signal(int fd)
{
    uint64_t one = 1;
    ssize_t ignored = write(fd, &one, sizeof(one));
    (void)ignored;
}

static void ap_drain(int fd)
{
    uint64_t count;
    ssize_t ignored = read(fd, &count, sizeof(count));
    (void)ignored;
}

static void ap_text(char *out, const char *text)
{
    snprintf(out, AP_TEXT, "%s", text != NULL && *text ? text : "unknown error");
}

static void ap_link(struct ap_pump *p, struct ap_request *r)
{
    r->prev = NULL;
    r->next = p->inflight;
    if (p->inflight != NULL)
        p->inflight->prev = r;
    p->inflight = r;
}

static void ap_unlink(struct ap_pump *p, struct ap_request *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        p->inflight = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

/* Queue r to be handed back at the next flush. */
static void ap_post(struct ap_pump *p, struct ap_request *r)
{
    r->next = NULL;
    if (p->posting_tail != NULL)
        p->posting_tail->next = r;
    else
        p->posting = r;
    p->posting_tail = r;
}

static void ap_answer(struct ap_pump *p, struct ap_request *r, int status, const char *why,
                      int held)
{
    r->status = status;
    ap_text(r->error, why);
    r->held = held;
    r->state = held ? AP_ANSWERED_HELD : AP_POSTED;
    ap_post(p, r);
}

/* Hand the posted requests to the caller; after this, the pump touches them no more
   (except a held one, whose late callback only frees its task). */
static void ap_flush(struct ap_pump *p)
{
    int was_empty;
    if (p->posting == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    was_empty = p->done == NULL;
    if (p->done_tail != NULL)
        p->done_tail->next = p->posting;
    else
        p->done = p->posting;
    p->done_tail = p->posting_tail;
    pthread_mutex_unlock(&p->lock);
    p->posting = p->posting_tail = NULL;
    if (was_empty)
        ap_signal(p->done_fd);
}

static void ap_done(struct iscsi_context *iscsi, int status, void *command_data,
                    void *private_data)
{
    struct ap_request *r = private_data;
    struct scsi_task *task = r->op >= AP_READ16 ? command_data : NULL;

    if (r->state != AP_IN_LIBISCSI) {  /* answered at a break: only its task is left */
        if (task != NULL)
            scsi_free_scsi_task(task);
        return;
    }
    ap_unlink(r->pump, r);
    r->status = status;
    r->error[0] = 0;
    if (status != SCSI_STATUS_GOOD && status != SCSI_STATUS_CHECK_CONDITION)
        ap_text(r->error, iscsi_get_error(iscsi));
    if (task != NULL) {
        r->sense_key = task->sense.key;
        r->sense_ascq = task->sense.ascq;
        r->residual = task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL ? task->residual : 0;
        if (status == SCSI_STATUS_GOOD && r->op >= AP_GET_LBA_STATUS && r->op <= AP_PR_IN)
            r->task = task;
        else
            scsi_free_scsi_task(task);
    }
    r->state = AP_POSTED;
    ap_post(r->pump, r);
}

static void ap_break_now(struct ap_pump *p, const char *reason)
{
    if (p->broken)
        return;
    p->broken = 1;
    ap_text(p->failure, reason);
    while (p->inflight != NULL) {
        struct ap_request *r = p->inflight;
        ap_unlink(p, r);
        ap_answer(p, r, SCSI_STATUS_ERROR, p->failure, 1);
    }
}

static void ap_queue(struct ap_pump *p, struct ap_request *r)
{
    struct iscsi_context *iscsi = p->iscsi;
    struct scsi_persistent_reserve_out_basic basic;  /* copied into the task by libiscsi */
    int queued = 0;

    r->pump = p;
    r->task = NULL;
    r->held = 0;
    if (p->broken) {
        ap_answer(p, r, SCSI_STATUS_ERROR, p->failure, 0);
        return;
    }
    if (r->op < AP_CONNECT || r->op > AP_LAST
        || (r->op == AP_WRITE_SAME16_ZERO && (r->blocksize <= 0
                                              || r->blocksize > AP_ZERO_BLOCK_MAX))) {
        ap_answer(p, r, SCSI_STATUS_ERROR, "request not understood", 0);
        return;
    }
    r->state = AP_IN_LIBISCSI;
    ap_link(p, r);
    switch (r->op) {
    case AP_CONNECT:
        queued = iscsi_full_connect_async(iscsi, r->portal, r->lun, ap_done, r) == 0;
        break;
    case AP_LOGOUT:
        queued = iscsi_logout_async(iscsi, ap_done, r) == 0;
        break;
    case AP_READ16:
        queued = iscsi_read16_iov_task(iscsi, r->lun, r->lba, r->datalen, r->blocksize,
                                       0, 0, 0, 0, 0, ap_done, r, &r->iov, 1) != NULL;
        break;
    case AP_WRITE16:
        queued = iscsi_write16_iov_task(iscsi, r->lun, r->lba, NULL, r->datalen,
                                        r->blocksize, 0, 0, 0, 0, 0, ap_done, r,
                                        &r->iov, 1) != NULL;
        break;
    case AP_WRITE_SAME16_ZERO:
        queued = iscsi_writesame16_task(iscsi, r->lun, r->lba, (unsigned char *)ap_zeros,
                                        r->blocksize, r->blocks, 0, r->unmap, 0, 0, ap_done,
                                        r) != NULL;
        break;
    case AP_GET_LBA_STATUS:
        queued = iscsi_get_lba_status_task(iscsi, r->lun, r->lba, r->datalen, ap_done,
                                           r) != NULL;
        break;
    case AP_SYNCHRONIZE_CACHE16:
        queued = iscsi_synchronizecache16_task(iscsi, r->lun, 0, 0, 0, 0, ap_done,
                                               r) != NULL;
        break;
    case AP_READ_CAPACITY16:
        queued = iscsi_readcapacity16_task(iscsi, r->lun, ap_done, r) != NULL;
        break;
    case AP_INQUIRY_VPD:
        queued = iscsi_inquiry_task(iscsi, r->lun, 1, r->page, r->datalen, ap_done,
                                    r) != NULL;
        break;
    case AP_PR_IN:
        queued = iscsi_persistent_reserve_in_task(iscsi, r->lun, r->action, r->datalen,
                                                  ap_done, r) != NULL;
        break;
    case AP_PR_OUT:
        memset(&basic, 0, sizeof(basic));
        basic.reservation_key = r->key;
        basic.service_action_reservation_key = r->sa_key;
        queued = iscsi_persistent_reserve_out_task(iscsi, r->lun, r->action, 0, r->pr_type,
                                                   &basic, ap_done, r) != NULL;
        break;
    }
    if (!queued && r->state == AP_IN_LIBISCSI) {
        ap_unlink(p, r);
        ap_answer(p, r, SCSI_STATUS_ERROR, iscsi_get_error(iscsi), 0);
    }
}

static int64_t ap_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void ap_service(struct ap_pump *p, int revents)
{
    if (!p->broken && iscsi_service(p->iscsi, revents) < 0)
        ap_break_now(p, iscsi_get_error(p->iscsi));
}

static void *ap_run(void *arg)
{
    struct ap_pump *p = arg;
    int64_t next_tick = ap_now_ms() + AP_TICK_MS;

    for (;;) {
        struct ap_request *incoming;
        struct pollfd fds[2];
        int stop, timeout, fd;

        pthread_mutex_lock(&p->lock);
        incoming = p->submitted;
        p->submitted = p->submitted_tail = NULL;
        stop = p->stop;
        if (p->break_asked && !p->broken)
            ap_break_now(p, p->break_reason);
        pthread_mutex_unlock(&p->lock);
        while (incoming != NULL) {
            struct ap_request *r = incoming;
            incoming = r->next;
            ap_queue(p, r);
        }
        ap_flush(p);
        if (stop)
            break;

        fd = p->broken ? -1 : iscsi_get_fd(p->iscsi);
        fds[0].fd = p->wake_fd;
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        fds[1].fd = fd;
        fds[1].events = fd >= 0 ? iscsi_which_events(p->iscsi) : 0;
        fds[1].revents = 0;
        timeout = (int)(next_tick - ap_now_ms());
        if (timeout < 0)
            timeout = 0;
        pthread_mutex_lock(&p->lock);
        if (p->submitted != NULL || p->stop || p->break_asked)
            timeout = 0;
        else
            p->sleeping = 1;
        pthread_mutex_unlock(&p->lock);
        if (poll(fds, 2, timeout) < 0 && errno != EINTR) {
            char why[AP_TEXT];
            snprintf(why, sizeof(why), "poll: %s", strerror(errno));
            ap_break_now(p, why);
        }
        pthread_mutex_lock(&p->lock);
        p->sleeping = 0;
        pthread_mutex_unlock(&p->lock);
        if (fds[0].revents & POLLIN)
            ap_drain(p->wake_fd);
        if (fd >= 0 && fds[1].revents)
            ap_service(p, fds[1].revents);
        if (ap_now_ms() >= next_tick) {
            next_tick = ap_now_ms() + AP_TICK_MS;
            ap_service(p, 0);
        }
        ap_flush(p);
    }

    iscsi_destroy_context(p->iscsi);  /* cancels what it holds: callbacks run here */
    p->iscsi = NULL;
    while (p->inflight != NULL) {     /* login commands get no callback when cancelled */
        struct ap_request *r = p->inflight;
        ap_unlink(p, r);
        ap_answer(p, r, SCSI_STATUS_CANCELLED, "session closed", 0);
    }
    ap_flush(p);
    pthread_mutex_lock(&p->lock);
    p->exited = 1;
    pthread_mutex_unlock(&p->lock);
    ap_signal(p->done_fd);
    return NULL;
}

struct ap_pump *ap_pump_new(struct iscsi_context *iscsi)
{
    pthread_attr_t attr;
    pthread_t thread;
    int failed;
    struct ap_pump *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->iscsi = iscsi;
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->wake_fd < 0 || p->done_fd < 0 || pthread_mutex_init(&p->lock, NULL) != 0)
        goto fail;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    failed = pthread_create(&thread, &attr, ap_run, p);
    pthread_attr_destroy(&attr);
    if (failed) {
        pthread_mutex_destroy(&p->lock);
        errno = failed;
        goto fail;
    }
    return p;
fail:
    failed = errno;
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    if (p->done_fd >= 0)
        close(p->done_fd);
    free(p);
    errno = failed;
    return NULL;
}

int ap_pump_fd(struct ap_pump *p)
{
    return p->done_fd;
}

void ap_pump_submit(struct ap_pump *p, struct ap_request *r)
{
    int wake;
    r->next = NULL;
    r->state = AP_NEW;
    pthread_mutex_lock(&p->lock);
    if (p->submitted_tail != NULL)
        p->submitted_tail->next = r;
    else
        p->submitted = r;
    p->submitted_tail = r;
    wake = p->sleeping;
    p->sleeping = 0;
    pthread_mutex_unlock(&p->lock);
    if (wake)
        ap_signal(p->wake_fd);
}

int ap_pump_take(struct ap_pump *p, struct ap_request **out, int max, int *exited)
{
    int count = 0;
    ap_drain(p->done_fd);
    pthread_mutex_lock(&p->lock);
    while (count < max && p->done != NULL) {
        out[count++] = p->done;
        p->done = p->done->next;
    }
    if (p->done == NULL)
        p->done_tail = NULL;
    *exited = p->exited && p->done == NULL;
    pthread_mutex_unlock(&p->lock);
    return count;
}

static void ap_ask(struct ap_pump *p, int stop, const char *reason)
{
    int wake;
    pthread_mutex_lock(&p->lock);
    if (stop)
        p->stop = 1;
    else if (!p->break_asked) {
        p->break_asked = 1;
        ap_text(p->break_reason, reason);
    }
    wake = p->sleeping;
    p->sleeping = 0;
    pthread_mutex_unlock(&p->lock);
    if (wake)
        ap_signal(p->wake_fd);
}

void ap_pump_break(struct ap_pump *p, const char *reason)
{
    ap_ask(p, 0, reason);
}

void ap_pump_stop(struct ap_pump *p)
{
    ap_ask(p, 1, NULL);
}

int ap_pump_exited(struct ap_pump *p)
{
    int exited;
    pthread_mutex_lock(&p->lock);
    exited = p->exited;
    pthread_mutex_unlock(&p->lock);
    return exited;
}

void ap_pump_free(struct ap_pump *p)
{
    close(p->wake_fd);
    close(p->done_fd);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* What identifies a logical unit, from its unmarshalled VPD pages, as text in out: the
   unit serial number (0x80), and the designators of the logical unit itself (0x83,
   association 0) as "TYPE:HEX" separated by spaces. -1 when out is too small. */
int ap_unit_serial(void *page, char *out, size_t size)
{
    struct scsi_inquiry_unit_serial_number *usn = page;
    int n = snprintf(out, size, "%s", usn->usn ? usn->usn : "");
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int ap_lu_designators(void *page, char *out, size_t size)
{
    struct scsi_inquiry_device_identification *id = page;
    struct scsi_inquiry_device_designator *d;
    size_t used = 0;
    out[0] = 0;
    for (d = id->designators; d != NULL; d = d->next) {
        if (d->association != SCSI_ASSOCIATION_LOGICAL_UNIT)
            continue;
        int n = snprintf(out + used, size - used, "%s%d:", used ? " " : "",
                         (int)d->designator_type);
        if (n < 0 || (size_t)n >= size - used)
            return -1;
        used += n;
        for (int i = 0; i < d->designator_length; i++) {
            n = snprintf(out + used, size - used, "%02x", (unsigned char)d->designator[i]);
            if (n < 0 || (size_t)n >= size - used)
                return -1;
            used += n;
        }
    }
    return 0;
}
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source(
    "asyncopy.access._libiscsi", SOURCE, libraries=["iscsi"], extra_link_args=["-pthread"]
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
