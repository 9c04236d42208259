// Runs every TEST of the executable, or those whose names contain argv[1].
#include <cstdio>
#include <cstring>
#include <exception>

#include "unit_test.h"

std::vector<unit::Case>& unit::cases() {
    static std::vector<Case> all;
    return all;
}

int main(int argc, char** argv) {
    int run = 0, failed = 0;
    for (const unit::Case& c : unit::cases()) {
        if (argc > 1 && !strstr(c.name, argv[1])) continue;
        ++run;
        try {
            c.run();
            printf("ok    %s\n", c.name);
        } catch (const std::exception& e) {
            ++failed;
            printf("FAIL  %s: %s\n", c.name, e.what());
        }
    }
    printf("%d tests, %d failed\n", run, failed);
    return failed == 0 && run > 0 ? 0 : 1;
}
