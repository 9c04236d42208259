// A tiny test runner: TEST(name) { CHECK(...); CHECK_EQ(a, b); }, run by test_main.cpp.
// No framework to download: the CI machines build without network access.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace unit {

struct Case {
    const char* name;
    void (*run)();
};
std::vector<Case>& cases();

struct Register {
    Register(const char* name, void (*run)()) { cases().push_back({name, run}); }
};

struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

template <class A, class B>
void check_eq(const A& a, const B& b, const char* expr, const char* file, int line) {
    if (a == b) return;
    std::ostringstream out;
    out << file << ":" << line << ": CHECK_EQ(" << expr << "): " << a << " != " << b;
    throw Failure(out.str());
}

}  // namespace unit

#define TEST(name)                                                    \
    static void test_##name();                                        \
    static unit::Register register_##name(#name, test_##name);        \
    static void test_##name()

#define CHECK(cond)                                                                                   \
    do {                                                                                              \
        if (!(cond)) throw unit::Failure(std::string(__FILE__) + ":" + std::to_string(__LINE__) +    \
                                         ": CHECK(" #cond ") failed");                               \
    } while (0)

#define CHECK_EQ(a, b) unit::check_eq((a), (b), #a ", " #b, __FILE__, __LINE__)
