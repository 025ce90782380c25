#include "core/json_reader.h"

#include <fstream>
#include <cctype>
#include <sstream>

namespace mmattn {

Json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MMATTN_CHECK(f.good(), IoError, "cannot open '", path, "'");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return Json::parse(ss.str());
  } catch (const Json::parse_error& e) {
    MMATTN_THROW(FormatError, path, ": malformed JSON: ", e.what());
  }
}

JsonReader::JsonReader(const Json& j, std::string where, std::string path)
    : j_(&j), where_(std::move(where)), path_(std::move(path)) {
  if (!j.is_object()) fail("expected an object, got " + json_type_desc(j));
}

const Json& JsonReader::empty_object() {
  static const Json e = Json::object();
  return e;
}

JsonReader JsonReader::child(const std::string& key) {
  if (!has(key)) fail_key(key, "is required");
  seen_.insert(key);
  return JsonReader((*j_)[key], where_, path_of(key));
}

JsonReader JsonReader::child_or_empty(const std::string& key) {
  seen_.insert(key);
  if (!has(key)) return JsonReader(empty_object(), where_, path_of(key));
  return JsonReader((*j_)[key], where_, path_of(key));
}

std::vector<JsonReader> JsonReader::array(const std::string& key) {
  std::vector<JsonReader> out;
  seen_.insert(key);
  if (!has(key)) return out;
  const Json& a = (*j_)[key];
  if (!a.is_array()) fail_key(key, "expected an array, got " + json_type_desc(a));
  for (size_t i = 0; i < a.size(); ++i) out.emplace_back(a[i], where_, path_of(key) + "[" + std::to_string(i) + "]");
  return out;
}

void JsonReader::finish() const {
  for (auto it = j_->begin(); it != j_->end(); ++it)
    if (!seen_.count(it.key())) fail_key(it.key(), "is not a known key");
}

void JsonReader::fail_key(const std::string& key, const std::string& msg) const {
  throw ConfigError((where_.empty() ? "" : where_ + ": ") + path_of(key) + " " + msg);
}
void JsonReader::fail(const std::string& msg) const {
  throw ConfigError((where_.empty() ? "" : where_ + ": ") + path_ + ": " + msg);
}

std::string json_type_desc(const Json& v) {
  std::string d = v.dump();
  if (d.size() > 40) d = d.substr(0, 37) + "...";
  if (v.is_string()) return "string " + d;
  if (v.is_boolean()) return "boolean " + d;
  if (v.is_number()) return "number " + d;
  if (v.is_null()) return "null";
  if (v.is_array()) return "array " + d;
  return "object " + d;
}

std::vector<JsonLineError> for_each_json_line(const std::string& text, const std::string& where,
                                              const std::function<void(JsonReader&, int64_t)>& on_object) {
  std::vector<JsonLineError> errors;
  std::istringstream in(text);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bool blank = true;
    for (char c : line)
      if (!std::isspace(static_cast<unsigned char>(c))) blank = false;
    if (blank) continue;
    const std::string at = str_cat(where, ":", lineno);
    try {
      Json j;
      try {
        j = Json::parse(line);
      } catch (const Json::parse_error& e) {
        throw FormatError(str_cat(at, ": malformed JSON: ", e.what()));
      }
      if (!j.is_object()) throw FormatError(str_cat(at, ": expected a JSON object, got ", json_type_desc(j)));
      JsonReader r(j, at);
      on_object(r, lineno);
    } catch (const Error& e) {
      errors.push_back({lineno, e.what()});
    }
  }
  return errors;
}

}  // namespace mmattn
