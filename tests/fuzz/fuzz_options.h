// Sanitizer defaults shared by the fuzz targets (include from exactly one file per target).
#pragma once

// coro::FramePool keeps freed coroutine frames on per-thread free lists and poisons them while
// they wait there (ASan then still reports a use after destruction). The list links live in
// that poisoned memory, and LeakSanitizer by default ignores pointers found in poisoned memory,
// so without use_poisoned=1 every cached frame but the first of each list would be reported as
// leaked at libFuzzer's per-input leak check.
extern "C" const char* __lsan_default_options() { return "use_poisoned=1"; }
