// Emulation stand-in: the types this header would declare are in emu.h.
#pragma once
