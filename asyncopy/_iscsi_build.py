"""cffi build script for ``asyncopy._libiscsi``: the few libiscsi calls asyncopy drives.

Compiled at install time against libiscsi-dev (API mode: struct layouts come from the
headers, not from this file). Only the asynchronous, event-loop side of libiscsi is used:
the session's socket is polled by trio, and completions arrive through one ``extern
"Python"`` callback while ``iscsi_service`` runs on the event loop's thread.
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

#define SCSI_STATUS_GOOD ...
#define SCSI_RESIDUAL_NO_RESIDUAL ...
#define SCSI_STATUS_CHECK_CONDITION ...
#define SCSI_STATUS_CANCELLED ...
#define SCSI_STATUS_ERROR ...
#define SCSI_STATUS_TIMEOUT ...
#define SCSI_SENSE_ILLEGAL_REQUEST ...
#define SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS ...
#define SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING ...
#define ISCSI_SESSION_NORMAL ...
#define ISCSI_HEADER_DIGEST_NONE_CRC32C ...
#define POLLIN ...
#define POLLOUT ...

typedef void (*iscsi_command_cb)(struct iscsi_context *iscsi, int status,
                                 void *command_data, void *private_data);

struct iscsi_context *iscsi_create_context(const char *initiator_name);
int iscsi_destroy_context(struct iscsi_context *iscsi);
const char *iscsi_get_error(struct iscsi_context *iscsi);
int iscsi_get_fd(struct iscsi_context *iscsi);
int iscsi_which_events(struct iscsi_context *iscsi);
int iscsi_service(struct iscsi_context *iscsi, int revents);
int iscsi_queue_length(struct iscsi_context *iscsi);
int iscsi_set_timeout(struct iscsi_context *iscsi, int timeout);
void iscsi_set_noautoreconnect(struct iscsi_context *iscsi, int state);
int iscsi_set_targetname(struct iscsi_context *iscsi, const char *targetname);
int iscsi_set_session_type(struct iscsi_context *iscsi, int session_type);
int iscsi_set_header_digest(struct iscsi_context *iscsi, int header_digest);
int iscsi_set_initiator_username_pwd(struct iscsi_context *iscsi, const char *user,
                                     const char *passwd);
int iscsi_full_connect_async(struct iscsi_context *iscsi, const char *portal, int lun,
                             iscsi_command_cb cb, void *private_data);
int iscsi_logout_async(struct iscsi_context *iscsi, iscsi_command_cb cb, void *private_data);
int iscsi_disconnect(struct iscsi_context *iscsi);
struct iscsi_url *iscsi_parse_full_url(struct iscsi_context *iscsi, const char *url);
void iscsi_destroy_url(struct iscsi_url *iscsi_url);

struct scsi_task *iscsi_readcapacity16_task(struct iscsi_context *iscsi, int lun,
                                            iscsi_command_cb cb, void *private_data);
struct scsi_task *iscsi_inquiry_task(struct iscsi_context *iscsi, int lun, int evpd,
                                     int page_code, int maxsize, iscsi_command_cb cb,
                                     void *private_data);
struct scsi_task *iscsi_read16_iov_task(struct iscsi_context *iscsi, int lun, uint64_t lba,
    uint32_t datalen, int blocksize, int rdprotect, int dpo, int fua, int fua_nv,
    int group_number, iscsi_command_cb cb, void *private_data, struct scsi_iovec *iov,
    int niov);
struct scsi_task *iscsi_write16_iov_task(struct iscsi_context *iscsi, int lun, uint64_t lba,
    unsigned char *data, uint32_t datalen, int blocksize, int wrprotect, int dpo, int fua,
    int fua_nv, int group_number, iscsi_command_cb cb, void *private_data,
    struct scsi_iovec *iov, int niov);
struct scsi_task *iscsi_writesame16_task(struct iscsi_context *iscsi, int lun, uint64_t lba,
    unsigned char *data, uint32_t datalen, uint32_t num_blocks, int anchor, int unmap,
    int wrprotect, int group, iscsi_command_cb cb, void *private_data);
struct scsi_task *iscsi_get_lba_status_task(struct iscsi_context *iscsi, int lun,
    uint64_t starting_lba, uint32_t alloc_len, iscsi_command_cb cb, void *private_data);
struct scsi_task *iscsi_synchronizecache16_task(struct iscsi_context *iscsi, int lun,
    uint64_t lba, uint32_t num_blocks, int syncnv, int immed, iscsi_command_cb cb,
    void *private_data);

void scsi_free_scsi_task(struct scsi_task *task);
void *scsi_datain_unmarshall(struct scsi_task *task);
const char *scsi_sense_key_str(int key);
const char *scsi_sense_ascq_str(int ascq);

extern "Python" void asyncopy_iscsi_done(struct iscsi_context *, int, void *, void *);
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source(
    "asyncopy._libiscsi",
    "#include <poll.h>\n#include <iscsi/iscsi.h>\n#include <iscsi/scsi-lowlevel.h>\n",
    libraries=["iscsi"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
