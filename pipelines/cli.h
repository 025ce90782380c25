#pragma once
// The mmattn command line. Catches every mmattn::Error and prints one clear line; exit codes:
// 0 ok, 1 error while running, 2 bad command line.
#include <string>

#include "core/json_reader.h"

namespace mmattn {
int cli_main(int argc, char** argv);

// One `--modulation METHOD[:key=value,...]` flag as a spec's modulation entry: {"method": METHOD,
// key: value, ...}. A value that parses as JSON (a number, true / false, a list such as
// heads=[[16,29],[26,9]]) is that JSON, anything else a string (transform=hflip); commas inside
// [...] or "..." do not split. Checked as the spec's "modulation" entries are. ConfigError naming the
// flag and its text for malformed input.
Json modulation_flag_json(const std::string& text);
}  // namespace mmattn
