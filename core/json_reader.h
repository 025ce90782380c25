#pragma once
// Strict, path-aware reading of JSON objects into typed structs (specs and config.json).
// Every error is a ConfigError naming the JSON path ("spec.json: $.pruning.keep: expected an
// integer, got \"abc\""). finish() rejects keys that were never read (specs are strict; HF
// configs call finish(false) because they carry many keys mmattn does not use).
#include <nlohmann/json.hpp>

#include <limits>
#include <functional>
#include <set>
#include <type_traits>
#include <string>
#include <vector>

#include "core/error.h"

namespace mmattn {

using Json = nlohmann::json;

// Parses a JSON file; IoError if unreadable, FormatError (with line/column) if malformed.
Json read_json_file(const std::string& path);

class JsonReader {
 public:
  // `where` prefixes messages (usually the file name); `path` is the JSON path of `j`.
  JsonReader(const Json& j, std::string where, std::string path = "$");

  const std::string& path() const { return path_; }
  std::string path_of(const std::string& key) const { return path_ + "." + key; }
  bool has(const std::string& key) const { return j_->contains(key) && !(*j_)[key].is_null(); }
  const Json& json() const { return *j_; }

  template <class T>
  T get(const std::string& key) {
    if (!has(key)) fail_key(key, "is required");
    return convert<T>((*j_)[key], key);
  }
  template <class T>
  T get(const std::string& key, const T& fallback) {
    if (!has(key)) {
      seen_.insert(key);
      return fallback;
    }
    return convert<T>((*j_)[key], key);
  }
  // A nested object (required / optional: `present` says whether it was there).
  JsonReader child(const std::string& key);
  JsonReader child_or_empty(const std::string& key);
  // Elements of an array of objects.
  std::vector<JsonReader> array(const std::string& key);
  // Marks a key as known without reading it.
  void ignore(const std::string& key) { seen_.insert(key); }

  // Throws for keys never read (strict). Call after reading everything.
  void finish() const;

  [[noreturn]] void fail_key(const std::string& key, const std::string& msg) const;
  [[noreturn]] void fail(const std::string& msg) const;

 private:
  template <class T>
  T convert(const Json& v, const std::string& key);
  const Json* j_;
  std::string where_, path_;
  std::set<std::string> seen_;
  static const Json& empty_object();
};

std::string json_type_desc(const Json& v);  // 'string "abc"', 'number 3.5', ...

// A JSON-lines record that could not be read (the other lines are still processed).
struct JsonLineError {
  int64_t line = 0;  // 1-based
  std::string message;
};
// Calls on_object(reader, line) for every non-blank line of `text` holding a JSON object (CRLF
// tolerated). A malformed line, a non-object, or any mmattn::Error thrown by on_object becomes a
// JsonLineError naming `where`:line. Returns those errors.
std::vector<JsonLineError> for_each_json_line(const std::string& text, const std::string& where,
                                              const std::function<void(JsonReader&, int64_t)>& on_object);

template <class T>
T JsonReader::convert(const Json& v, const std::string& key) {
  seen_.insert(key);
  auto bad = [&](const char* want) { fail_key(key, std::string("expected ") + want + ", got " + json_type_desc(v)); };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) bad("true or false");
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_integer()) {
      const long long x = v.get<long long>();
      if (x < (long long)std::numeric_limits<T>::min() || (v.is_number_unsigned() ? v.get<unsigned long long>() > (unsigned long long)std::numeric_limits<T>::max() : x > (long long)std::numeric_limits<T>::max()))
        bad("an integer in range");
      return T(x);
    }
    if (v.is_number_float() && v.get<double>() == double((long long)v.get<double>())) return T(v.get<double>());
    bad("an integer");
    return T{};  // not reached: bad() throws
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) bad("a number");
    return T(v.get<double>());
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) bad("a string");
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, Json>) {
    return v;
  } else {  // std::vector<E>
    using E = typename T::value_type;
    if (!v.is_array()) bad("an array");
    T out;
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string k = key + "[" + std::to_string(i) + "]";
      out.push_back(convert<E>(v[i], k));
    }
    seen_.insert(key);
    return out;
  }
}

}  // namespace mmattn
