// The functions of this target are static inline in include/CColoLinux.h; this file gives SwiftPM a
// translation unit to build.
#include "CColoLinux.h"
