#pragma once
// The mmattn command line. Catches every mmattn::Error and prints one clear line; exit codes:
// 0 ok, 1 error while running, 2 bad command line.
namespace mmattn {
int cli_main(int argc, char** argv);
}
