// The file behind a segment: created exclusively, opened only when it can be trusted,
// mapped and unmapped by owners that cannot leak, unlinked only while the name is ours.
//
// Trust: whoever can write a segment can make its consumers unpickle anything, so a
// segment is used only if the file at its name is a regular file owned by this process's
// effective uid with mode 0600. The file is never opened through a symbolic link, and
// never in a way that blocks (a FIFO planted at the name).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sage {

constexpr const char* kShmDir = "/dev/shm";  // where shm_open() keeps its files on Linux

struct FileId {  // which file a name referred to when we opened it
    uint64_t dev = 0, ino = 0;
    bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};

class FileDescriptor {  // closes on scope exit
public:
    explicit FileDescriptor(int fd = -1) : fd_(fd) {}
    ~FileDescriptor();
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() { int fd = fd_; fd_ = -1; return fd; }

private:
    int fd_;
};

class Mapping {  // a shared mapping, unmapped on scope exit unless released
public:
    Mapping() = default;
    Mapping(int fd, size_t size, bool writable, bool populate);  // throws SystemError
    ~Mapping();
    Mapping(Mapping&& o) noexcept;
    Mapping& operator=(Mapping&& o) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    void* get() const { return addr_; }
    size_t size() const { return size_; }
    void* release();  // the caller unmaps from now on

private:
    void* addr_ = nullptr;
    size_t size_ = 0;
};

// The file of shm name `shm_name` ("/sage_queue.<queue>") under kShmDir.
std::string shm_file_path(const std::string& shm_name);

// Creates the file exclusively with mode 0600; -1 with errno set if that fails.
int create_segment_file(const std::string& shm_name, FileId& id);

// Opens an existing segment file read-write, after the trust checks; throws
// UntrustedSegment naming the path, type, owner and mode and what to do. Returns -1 with
// errno ENOENT if there is no file of that name. `size` gets the file size.
int open_trusted_segment_file(const std::string& shm_name, const std::string& queue, FileId& id,
                              uint64_t& size);

// Removes the name only while it still refers to file `id`: never a newer queue created
// under the same name after ours was removed from outside. True if removed.
bool unlink_if_same_file(const std::string& shm_name, const FileId& id);

}  // namespace sage
