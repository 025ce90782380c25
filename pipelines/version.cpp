#include "pipelines/version.h"

namespace mmattn {
const char* version_string() { return "0.1.0"; }
}
