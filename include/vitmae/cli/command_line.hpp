// SPDX-License-Identifier: Apache-2.0
// vitmae::cli::CommandLine, the programs' flag table: a flag is a name, a metavar, its help
// (which ends with its default) and what it sets; the help text is generated from the table, so
// every program's --help reads alike. For training runs it also records every flag's value
// (recorded(), stored in trainer_state.json as "args") and takes them back on --resume
// (resume_from()), refusing a value given again that contradicts the stored one.
#pragma once

#include "vitmae/cli/program.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace vitmae::cli {

class CommandLine {
 public:
  /// What --resume does with a flag: the checkpoint's value is taken unless given, and a value
  /// given must agree (kept); taken unless given, and may change (free); not recorded (never).
  enum class OnResume { kept, free, never };

  struct Flag {
    std::string name, metavar, help;
    std::function<void(const std::string& value)> set;  // a switch: "off" unsets it, anything else sets it
    std::function<std::string()> get;                   // the value now, as set() takes it
    OnResume on_resume = OnResume::kept;
    std::vector<std::string> aliases;  // older spellings, accepted and not shown
    std::string default_value;         // get() when declared
    bool path = false;                 // a file or folder: recorded as an absolute path
  };

  /// `head`: the usage lines and any text before the flags.
  CommandLine(std::string program, std::string head) : program_(std::move(program)), head_(std::move(head)) {}

  void section(std::string title) { sections_.push_back({std::move(title), {}}); }

  void add(Flag f) {
    if (sections_.empty()) section("Flags");
    f.default_value = f.get();
    sections_.back().second.push_back(std::move(f));
  }

  /// A switch: sets `target` to `on`.
  void toggle(const std::string& name, bool& target, bool on, std::string help, OnResume r = OnResume::kept) {
    add({name,
         "",
         std::move(help),
         [&target, on](const std::string& v) { target = v == "off" ? !on : on; },
         [&target, on] { return std::string(target == on ? "on" : "off"); },
         r,
         {},
         {}});
  }
  void text(const std::string& name, const std::string& metavar, std::string& target, std::string help,
            OnResume r = OnResume::kept) {
    add({name,
         metavar,
         std::move(help),
         [&target](const std::string& v) { target = v; },
         [&target] { return target; },
         r,
         {},
         {}});
  }
  /// A file or folder (or another kind of source, such as "fashion-mnist:DIR:SPLIT"): recorded
  /// for --resume as an absolute path when it exists, so that a run resumes from any folder.
  void path(const std::string& name, const std::string& metavar, std::string& target, std::string help,
            OnResume r = OnResume::kept) {
    text(name, metavar, target, std::move(help), r);
    sections_.back().second.back().path = true;
  }
  /// An integer in [lo, hi].
  template <class Int>
  void integer(const std::string& name, const std::string& metavar, Int& target, long long lo, long long hi,
               std::string help, OnResume r = OnResume::kept) {
    add({name,
         metavar,
         std::move(help),
         [&target, name, lo, hi](const std::string& v) { target = static_cast<Int>(to_int(name, v, lo, hi)); },
         [&target] { return std::to_string(target); },
         r,
         {},
         {}});
  }
  /// A finite number for which ok(x) holds (`range` says which, for the error).
  void number(const std::string& name, const std::string& metavar, double& target, std::function<bool(double)> ok,
              const std::string& range, std::string help, OnResume r = OnResume::kept) {
    add({name,
         metavar,
         std::move(help),
         [&target, name, ok, range](const std::string& v) {
           const double x = to_double(name, v);
           if (!std::isfinite(x) || !ok(x)) throw UsageError(name + " must be " + range + ", got '" + v + "'");
           target = x;
         },
         [&target] {  // the shortest text that reads back as the same double
           char b[32];
           for (int digits = 1; digits <= 17; ++digits) {
             std::snprintf(b, sizeof b, "%.*g", digits, target);
             if (std::strtod(b, nullptr) == target) break;
           }
           return std::string(b);
         },
         r,
         {},
         {}});
  }
  /// A flag that may be given more than once, each value appended to `target` (never recorded).
  void list(const std::string& name, const std::string& metavar, std::vector<std::string>& target, std::string help) {
    add({name,
         metavar,
         std::move(help),
         [&target](const std::string& v) { target.push_back(v); },
         [&target] { return std::to_string(target.size()) + " values"; },
         OnResume::never,
         {},
         {}});
  }
  /// Arguments that are not flags (not starting with '-') are appended to `target`, as --image
  /// values would be (shell globs: "vitmae-classify --model DIR *.png"). Without it they are
  /// usage errors.
  void positional(std::vector<std::string>& target) { positional_ = &target; }

  /// An older spelling of `name` (the last flag added when empty).
  void alias(const std::string& old_name) { sections_.back().second.back().aliases.push_back(old_name); }

  /// Every flag, its metavar and its help, by section, after the head.
  std::string help() const {
    std::string out = head_;
    for (const auto& [title, flags] : sections_) {
      out += title + ":\n";
      for (const Flag& f : flags) {
        std::string left = "  " + f.name + (f.metavar.empty() ? "" : " " + f.metavar);
        left += left.size() < 22 ? std::string(22 - left.size(), ' ') : "\n" + std::string(22, ' ');
        std::string body;
        for (char c : f.help) body += c == '\n' ? "\n" + std::string(22, ' ') : std::string(1, c);
        out += left + body + "\n";
      }
    }
    return out + "  -h, --help          print this text and exit\n";
  }
  const std::string& head() const { return head_; }

  /// Sets what argv gives; -h/--help prints help() and exits 0.
  /// @throws UsageError on an unknown flag or a bad value.
  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        std::cout << help();
        std::exit(0);
      }
      const Flag* f = find(a);
      if (!f && positional_ && !a.empty() && a[0] != '-') {
        positional_->push_back(a);
        continue;
      }
      if (!f) throw UsageError("unknown argument '" + a + "'");
      const std::string v = f->metavar.empty() ? std::string() : value(argc, argv, i);
      f->set(v);
      given_[f->name] = v;
    }
  }

  bool given(const std::string& name) const { return given_.count(name) > 0; }
  std::string given_value(const std::string& name) const { return given_.at(name); }

  /// What --resume takes again: every recorded flag's value now, given or not ({"--name":
  /// "value", ...}, a switch "on" or "off"), and the program's name.
  nlohmann::json recorded() const {
    nlohmann::json j = nlohmann::json::object();
    j["program"] = program_;
    for (const auto& s : sections_)
      for (const Flag& f : s.second)
        if (f.on_resume != OnResume::never) j[f.name] = f.path ? absolute(f.get()) : f.get();
    return j;
  }

  /// --resume: sets each flag of `stored` (recorded() of the run being resumed) that this
  /// command line does not give. `where` names the file, for errors.
  /// @throws UsageError (one line) when a kept flag was given with another value, naming both,
  /// or when the checkpoint is another program's.
  void resume_from(const nlohmann::json& stored, const std::string& where) {
    if (!stored.is_object()) return;
    if (stored.contains("program") && stored["program"] != program_)
      throw UsageError(
          "vitmae: " + where + ": a checkpoint of " + stored["program"].get<std::string>() + ", not of " + program_,
          false);
    std::map<std::string, std::string> taken;
    for (const auto& [name, j] : stored.items()) {
      const Flag* f = find(name);
      if (!f || !j.is_string() || f->on_resume == OnResume::never) continue;
      std::string theirs = j.get<std::string>();
      if (f->metavar.empty() && theirs.empty())
        theirs = "on";  // (a switch as the first records of this session held it)
      if (!given(name)) {
        if (theirs != f->default_value) f->set(theirs), taken[name] = theirs;
        continue;
      }
      const std::string mine = f->path ? absolute(f->get()) : f->get();
      if (f->path) theirs = absolute(theirs);
      if (f->on_resume != OnResume::kept || same_value(mine, theirs)) continue;
      if (f->metavar.empty())
        throw UsageError("vitmae: " + where + ": the run was started without " + name +
                             "; a resumed run must keep that (leave the " + "flag out)",
                         false);
      throw UsageError("vitmae: " + where + ": the run was started with " + name + " " + theirs + ", this run gives " +
                           name + " " + mine + "; a resumed run must keep it (leave the flag out to keep it)",
                       false);
    }
    given_.insert(taken.begin(), taken.end());  // the run's own choices, as if given again
  }

 private:
  static std::string absolute(const std::string& p) {
    std::error_code ec;
    if (p.empty() || !std::filesystem::exists(p, ec)) return p;
    const std::filesystem::path a = std::filesystem::absolute(p, ec).lexically_normal();
    return ec ? p : a.string();
  }
  const Flag* find(const std::string& name) const {
    for (const auto& s : sections_)
      for (const Flag& f : s.second)
        if (f.name == name || std::find(f.aliases.begin(), f.aliases.end(), name) != f.aliases.end()) return &f;
    return nullptr;
  }
  static bool same_value(const std::string& a, const std::string& b) {
    if (a == b) return true;
    char *ea = nullptr, *eb = nullptr;
    const double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
    return !a.empty() && !b.empty() && !*ea && !*eb && x == y;
  }

  std::string program_, head_;
  std::vector<std::pair<std::string, std::vector<Flag>>> sections_;
  std::map<std::string, std::string> given_;
  std::vector<std::string>* positional_ = nullptr;
};

}  // namespace vitmae::cli
