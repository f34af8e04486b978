#include "CKVM.h"
#include <errno.h>
#include <sys/ioctl.h>

int pvh_ioctl(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
int pvh_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int pvh_errno(void) { return errno; }
