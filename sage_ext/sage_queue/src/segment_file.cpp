// The segment's file: exclusive creation, the trust checks, RAII for descriptors and
// mappings, and an unlink that removes only our own file (include/segment_file.h).
#include "segment_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include "shm_queue.h"

namespace sage {
namespace {

constexpr int kOpenFlags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;

const char* file_type(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "a special file";
}

std::string user_name(uid_t uid) {
    char buf[1024];
    passwd pw{}, *found = nullptr;
    std::string who = "uid " + std::to_string(uid);
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found) who += " (" + std::string(found->pw_name) + ")";
    return who;
}

std::string octal_mode(mode_t mode) {
    char buf[8];
    snprintf(buf, sizeof buf, "%04o", unsigned(mode & 07777));
    return buf;
}

constexpr const char* kRemoveOurs = "remove it with `sage queue cleanup --force`, or use another queue name";

// Why a file with these facts cannot be a segment of ours; "" if it can.
std::string distrust(const std::string& path, const struct stat& st) {
    const uid_t me = geteuid();
    if (!S_ISREG(st.st_mode)) {
        std::string what = path + " is " + file_type(st.st_mode) + ", not a queue segment; ";
        if (st.st_uid != me)
            return what + "it belongs to " + user_name(st.st_uid) + ": ask its owner or root to remove it, "
                          "or use another queue name";
        return what + kRemoveOurs;
    }
    if (st.st_uid != me)
        return path + " belongs to " + user_name(st.st_uid) + ", not to this user (" + user_name(me) +
               "), mode " + octal_mode(st.st_mode) + ": whoever can write a segment can run code in its "
               "consumers, so only its owner may open it; ask its owner or root to remove it, or use another "
               "queue name";
    if ((st.st_mode & 07777) != 0600)
        return path + " has mode " + octal_mode(st.st_mode) + ", not 0600: another user may have read or "
               "written it, so it is not used; " + kRemoveOurs;
    return "";
}

}  // namespace

FileDescriptor::~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
}

Mapping::Mapping(int fd, size_t size, bool writable, bool populate) : size_(size) {
    void* mem = mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                     MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
    if (mem == MAP_FAILED) {
        int e = errno;
        throw SystemError(std::string("cannot map a queue segment: ") + strerror(e), e);
    }
    addr_ = mem;
}

Mapping::~Mapping() {
    if (addr_) munmap(addr_, size_);
}

Mapping::Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(o.size_) {}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
    if (this != &o) {
        if (addr_) munmap(addr_, size_);
        addr_ = std::exchange(o.addr_, nullptr);
        size_ = o.size_;
    }
    return *this;
}

void* Mapping::release() { return std::exchange(addr_, nullptr); }

std::string shm_file_path(const std::string& shm_name) { return std::string(kShmDir) + shm_name; }

int create_segment_file(const std::string& shm_name, FileId& id) {
    const std::string path = shm_file_path(shm_name);
    int fd = ::open(path.c_str(), kOpenFlags | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return -1;
    // Held until the descriptor closes, after the segment is ready: an opener that finds the
    // file unready and this lock free knows its creator died (see attach_segment).
    flock(fd, LOCK_EX | LOCK_NB);
    struct stat st{};
    fchmod(fd, 0600);  // never wider than owner-only, whatever the umask
    if (fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        unlink(path.c_str());
        errno = e;
        return -1;
    }
    id = {uint64_t(st.st_dev), uint64_t(st.st_ino)};
    return fd;
}

int open_trusted_segment_file(const std::string& shm_name, const std::string& queue, FileId& id,
                              uint64_t& size) {
    const std::string path = shm_file_path(shm_name);
    // lstat first: a FIFO or device is judged without opening it (opening may have effects).
    struct stat st{};
    if (lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return -1;
        int e = errno;
        throw SystemError("cannot open queue '" + queue + "': " + path + ": " + strerror(e), e);
    }
    std::string problem = distrust(path, st);
    if (!problem.empty()) throw UntrustedSegment("cannot open queue '" + queue + "': " + problem);
    int fd = ::open(path.c_str(), kOpenFlags);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) return -1;
        if (e == ELOOP) throw UntrustedSegment("cannot open queue '" + queue + "': " + path +
                                               " is a symbolic link, not a queue segment; " + kRemoveOurs);
        throw SystemError("cannot open queue '" + queue + "': " + path + ": " + strerror(e), e);
    }
    FileDescriptor guard(fd);
    // The checks again on what was opened: the name may have changed since the lstat.
    if (fstat(fd, &st) != 0) {
        int e = errno;
        throw SystemError("cannot stat queue '" + queue + "': " + strerror(e), e);
    }
    problem = distrust(path, st);
    if (!problem.empty()) throw UntrustedSegment("cannot open queue '" + queue + "': " + problem);
    id = {uint64_t(st.st_dev), uint64_t(st.st_ino)};
    size = uint64_t(st.st_size);
    return guard.release();
}

bool unlink_if_same_file(const std::string& shm_name, const FileId& id) {
    const std::string path = shm_file_path(shm_name);
    struct stat st{};
    if (lstat(path.c_str(), &st) != 0) return false;
    if (!(FileId{uint64_t(st.st_dev), uint64_t(st.st_ino)} == id)) return false;
    return ::unlink(path.c_str()) == 0;
}

}  // namespace sage
