/**
 * One timer serving many deadlines: armed for the earliest one asked for, and left armed when
 * that one no longer matters (it then fires, and its owner re-arms it for the next one, if
 * any). Arming and clearing a timer per waiting command or per hold was a noticeable part of an
 * uncontended acquisition. Unref'd: a deadline is no reason to keep the process alive.
 */
export class EarliestTimer {
  private timer?: NodeJS.Timeout;
  /** When the timer fires (epoch ms); `Infinity` while none is armed. */
  private armedFor = Infinity;

  /** `onFire` runs once the timer fires, with the timer disarmed (so it may re-arm it). */
  constructor(private readonly onFire: () => void) {}

  /** Makes sure the timer fires no later than `at` (epoch ms). */
  atOrBefore(at: number): void {
    if (at >= this.armedFor) return;
    clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.armedFor = Infinity;
        this.onFire();
      },
      Math.max(0, at - Date.now()),
    ).unref();
  }

  /** Disarms the timer (shutdown). */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Infinity;
  }
}
