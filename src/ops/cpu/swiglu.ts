// SwiGLU reference: y = silu(gate) · up, silu(g) = g · sigmoid(g).

const sigmoid = (g: number) => 1 / (1 + Math.exp(-g));

export function swigluCpu(gate: ArrayLike<number>, up: ArrayLike<number>): Float32Array {
  const y = new Float32Array(gate.length);
  for (let i = 0; i < y.length; i++) y[i] = gate[i] * sigmoid(gate[i]) * up[i];
  return y;
}

export function swigluBackwardCpu(dy: ArrayLike<number>, gate: ArrayLike<number>, up: ArrayLike<number>): { dgate: Float32Array; dup: Float32Array } {
  const dgate = new Float32Array(gate.length), dup = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i], s = sigmoid(g);
    dup[i] = dy[i] * g * s;
    dgate[i] = dy[i] * up[i] * s * (1 + g * (1 - s));
  }
  return { dgate, dup };
}
