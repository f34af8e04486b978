// CXen is header-only; SwiftPM needs one C source per C target.
#include "CXen.h"
