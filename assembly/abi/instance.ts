// The one machine this WebAssembly instance models: its board and the hypervisor under it.

import { Board } from "../board/board";
import { Hypervisor } from "../hypervisor/hypervisor";

export const board = new Board();
export const hypervisor = new Hypervisor(board);
