#include "textflag.h"
#include "funcdata.h"

// Reserve4K only declares a frame. Its prologue, which the assembler
// writes as for any function that may split its stack, checks that the
// frame fits and calls the runtime to grow the stack when it does not; the
// body writes nothing, so the frame holds no pointers.

// func Reserve4K()
TEXT ·Reserve4K(SB), 0, $4096-0
	NO_LOCAL_POINTERS
	RET
