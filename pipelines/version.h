#pragma once
namespace mmattn {
const char* version_string();
}
