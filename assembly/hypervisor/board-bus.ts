// The hypervisor's own access path to the hardware: the same port, MMIO, MSR, line and
// acknowledge operations the board offers any software, without traps, exits or shadows.

import { Board } from "../board/board";
import { BoardConfig } from "../board/config";
import { HardwareBus } from "./bus";

export class BoardBus extends HardwareBus {
  constructor(private board: Board) {
    super();
  }
  config(): BoardConfig {
    return this.board.config;
  }
  now(): i64 {
    return this.board.now;
  }
  advanceTo(t: i64): void {
    this.board.advanceTo(t);
  }
  inb(port: u32): u32 {
    return this.board.inByte(port);
  }
  outb(port: u32, value: u32): void {
    this.board.outByte(port, value);
  }
  readl(addr: u32): u32 {
    return this.board.mmioRead(addr);
  }
  writel(addr: u32, value: u32): void {
    this.board.mmioWrite(addr, value);
  }
  rdmsr(msr: u32): u64 {
    return this.board.rdmsr(msr);
  }
  wrmsr(msr: u32, value: u64): void {
    this.board.wrmsr(msr, value);
  }
  isaLine(line: i32): bool {
    return this.board.isaLine(line);
  }
  setIsaLine(line: i32, level: bool): void {
    this.board.setIsaLine(line, level);
  }
  gsiLine(pin: i32): bool {
    return this.board.gsiLine(pin);
  }
  setGsiLine(pin: i32, level: bool): void {
    this.board.setGsiLine(pin, level);
  }
  setPitIrq0Route(connected: bool): void {
    this.board.setPitIrq0Route(connected);
  }
  pitIrq0Routed(): bool {
    return this.board.pitIrq0Routed();
  }
  inta(): i32 {
    return this.board.inta();
  }
  selectCpu(k: i32): void {
    this.board.selectCpu(k);
  }
  cpu(): i32 {
    return this.board.cpu;
  }
  sipiState(): i32 {
    return this.board.sipiState(this.board.cpu);
  }
  setSipiState(state: i32): void {
    this.board.setSipiState(this.board.cpu, state);
  }
  nmiPending(): bool {
    return this.board.lapic.nmiWaiting();
  }
  setNmiPending(pending: bool): void {
    this.board.lapic.setNmiPending(pending);
  }
}
