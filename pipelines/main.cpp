#include <cstdio>
#include "pipelines/version.h"
int main() { std::printf("mmattn %s\n", mmattn::version_string()); return 0; }
