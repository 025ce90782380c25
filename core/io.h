#pragma once
// Small file helpers. Writers are atomic (temp file + rename) so that a failure never leaves a
// half-written result where a good one was.
#include <string>

namespace mmattn {

std::string read_text_file(const std::string& path);  // IoError if unreadable
void write_file_atomic(const std::string& path, const std::string& content);
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
// `p` if absolute, else base_dir/p (base_dir "" -> p unchanged).
std::string resolve_path(const std::string& base_dir, const std::string& p);
std::string parent_dir(const std::string& path);

}  // namespace mmattn
