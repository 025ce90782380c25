#include "pipelines/cli.h"

int main(int argc, char** argv) { return mmattn::cli_main(argc, argv); }
