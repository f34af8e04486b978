// The jailer's system calls (CSeccomp.h; docs/ARCHITECTURE.md: Sandbox):
// a mount namespace of the guest process's own whose root is a small tmpfs
// holding only what the process still opens by path after set-up, and the
// switch to an unprivileged user. mount(2), pivot_root(2), unshare(2),
// credentials(7); every call returns 0 or -errno and touches no Swift memory
// but the NUL-terminated strings it is given for the call.
#define _GNU_SOURCE
#include "CSeccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int pvh_jail_unshare(const char *hostname) {
    // Mounts, System V IPC and POSIX message queues, and the host name
    // (namespaces(7)): the process shares no IPC object with the host's
    // processes or another guest's, and the host's name is not its.
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0) return -errno;
    size_t length = strlen(hostname);
    if (length == 0 || length > 64) return -EINVAL;  // HOST_NAME_MAX
    if (sethostname(hostname, length) != 0) return -errno;
    // Nothing this namespace mounts or unmounts reaches the host's (and
    // nothing the host mounts later shows here): shared-subtrees.rst.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -errno;
    return 0;
}

/// mkdir -p of `path` (absolute), mode 0755, each component kept if it exists.
static int make_directories(const char *path) {
    char buffer[PATH_MAX];
    size_t length = strlen(path);
    if (path[0] != '/' || length >= sizeof buffer) return -EINVAL;
    memcpy(buffer, path, length + 1);
    for (char *p = buffer + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            if (mkdir(buffer, 0755) != 0 && errno != EEXIST) return -errno;
            *p = saved;
            if (saved == 0) break;
        }
    }
    return 0;
}

int pvh_jail_mount_root(const char *root) {
    int r = make_directories(root);
    if (r) return r;
    // Small (what it holds is mount points), no device nodes or set-uid
    // programs of its own, nothing to execute.
    if (mount("pvh-jail", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755") != 0) return -errno;
    return 0;
}

int pvh_jail_bind(const char *source, const char *target, int read_only, int device) {
    struct stat st;
    if (stat(source, &st) != 0) return -errno;
    int directory = S_ISDIR(st.st_mode);
    char parent[PATH_MAX];
    size_t length = strlen(target);
    if (target[0] != '/' || length >= sizeof parent) return -EINVAL;
    memcpy(parent, target, length + 1);
    char *slash = strrchr(parent, '/');
    if (slash != parent) {
        *slash = 0;
        int r = make_directories(parent);
        if (r) return r;
    }
    if (directory) {
        if (mkdir(target, 0755) != 0 && errno != EEXIST) return -errno;
    } else {
        int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return -errno;
        close(fd);
    }
    if (mount(source, target, NULL, MS_BIND, NULL) != 0) return -errno;
    // A bind mount takes its flags only on a remount (mount(2): MS_BIND
    // ignores the others on creation).
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC | (device ? 0 : MS_NODEV) | (read_only ? MS_RDONLY : 0);
    if (mount(NULL, target, NULL, flags, NULL) != 0) return -errno;
    return 0;
}

int pvh_jail_mount_proc(const char *target) {
    int r = make_directories(target);
    if (r) return r;
    // A procfs instance of its own (Linux 5.8): other users' processes are
    // invisible (hidepid=invisible) and only the per-process directories
    // are there (subset=pid: no /proc/sys, /proc/kcore, ...). proc(5).
    if (mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid") != 0) return -errno;
    return 0;
}

// Set once, on the process's one thread, before the jail is entered.
static int force_chroot;

void pvh_jail_force_chroot(int force) { force_chroot = force; }

int pvh_jail_pivot(const char *root, int *used_chroot) {
    *used_chroot = 0;
    if (chdir(root) != 0) return -errno;
    // pivot_root(".", "."): the old root is stacked under the new one and
    // detached at once, no directory for it needed (pivot_root(2), NOTES).
    if (!force_chroot && syscall(SYS_pivot_root, ".", ".") == 0) {
        if (umount2(".", MNT_DETACH) != 0) return -errno;
    } else {
        // pivot_root refuses some roots (an initramfs's rootfs: EINVAL):
        // move the new root over / and chroot into it, as switch_root does.
        // The old root stays mounted under it but out of reach.
        if (mount(".", "/", NULL, MS_MOVE, NULL) != 0) return -errno;
        if (chroot(".") != 0) return -errno;
        *used_chroot = 1;
    }
    if (chdir("/") != 0) return -errno;
    // Its mount points made, the root is read-only.
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) return -errno;
    return 0;
}

int pvh_jail_drop_bounding_set(void) {
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL) break;  // past the kernel's last capability
            return -errno;
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    return 0;
}

int pvh_jail_set_ids(uint32_t uid, uint32_t gid) {
    // glibc applies each to every thread of the process (nptl's setxid
    // broadcast), as POSIX asks: the vCPU and device threads exist already.
    gid_t groups[1] = { gid };
    if (setgroups(1, groups) != 0) return -errno;
    if (setresgid(gid, gid, gid) != 0) return -errno;
    if (setresuid(uid, uid, uid) != 0) return -errno;
    // Not undone: none of the ids is 0 any more.
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) != 0 || r != uid || e != uid || s != uid) return -EPERM;
    return 0;
}

int pvh_jail_lookup_user(const char *name, uint32_t *uid, uint32_t *gid) {
    struct passwd entry, *found = NULL;
    char buffer[4096];
    int r = getpwnam_r(name, &entry, buffer, sizeof buffer, &found);
    if (r != 0) return -r;
    if (!found) return -ENOENT;
    *uid = found->pw_uid;
    *gid = found->pw_gid;
    return 0;
}

int pvh_jail_id_taken(uint32_t uid, uint32_t gid) {
    char buffer[4096];
    int taken = 0;
    struct passwd user, *found_user = NULL;
    int r = getpwuid_r(uid, &user, buffer, sizeof buffer, &found_user);
    // Not found is 0 and NULL, or ENOENT from some NSS modules (getpwnam(3)).
    if (r != 0 && r != ENOENT) return -r;
    if (found_user) taken |= 1;
    struct group group, *found_group = NULL;
    r = getgrgid_r(gid, &group, buffer, sizeof buffer, &found_group);
    if (r != 0 && r != ENOENT) return -r;
    if (found_group) taken |= 2;
    return taken;
}

int pvh_jail_open_read(const char *path) { return open(path, O_RDONLY | O_CLOEXEC); }
long pvh_jail_read(int fd, void *buffer, unsigned long count) { return read(fd, buffer, count); }
void pvh_jail_close(int fd) { close(fd); }
