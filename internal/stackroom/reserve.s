//go:build amd64 || arm64

#include "textflag.h"
#include "funcdata.h"

// Reserve4K and Reserve8K only declare a frame. Their prologue, which the
// assembler writes as for any function that may split its stack, checks
// that the frame fits and calls the runtime to grow the stack when it does
// not; the body writes nothing, so the frame holds no pointers. The same
// text assembles for amd64 and arm64.

// func Reserve4K()
TEXT ·Reserve4K(SB), 0, $4096-0
	NO_LOCAL_POINTERS
	RET

// func Reserve8K()
TEXT ·Reserve8K(SB), 0, $8192-0
	NO_LOCAL_POINTERS
	RET
