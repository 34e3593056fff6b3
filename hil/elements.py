"""Element kinds: each kind of circuit element declared once, as a circuit simulator's device table.

A kind says, for all its elements of one circuit at once (arrays over the elements,
batched over examples):

- its terminals and circuit-file keys, validated with the file, line and element name
  (:meth:`Kind.parse`);
- its currents i_t(V; theta) leaving each terminal node into the element, and its stamp
  G_tu = d i_t / d V_u in the Jacobian A = dF/dV (:meth:`Kind.evaluate`);
- its trainable parameter (``param``) with bounds, and d i_t / d theta (:meth:`Kind.dparam`);
- its local signal, the quantity a physical learning rule reads at a state (:meth:`Kind.local_signal`);
- its SPICE card (:meth:`Kind.card`) and its circuit-file entry (:meth:`Kind.toml`).

The solver (:mod:`hil.mna`) knows stamps, not kinds. Units: volts, amperes, siemens.
A kind with ``branch = True`` (the VCVS) adds one unknown per element, its branch
current (modified nodal analysis): its last terminal is that unknown, and the
"current" it reports there is the branch equation's residual (volts).

Kinds:

==========  =========================================  ===========  ======================
kind        current leaving terminal a (a -> b)        theta        local signal
==========  =========================================  ===========  ======================
edge        g (V_a - V_b)                              g, S         1/2 dv^2
vccs        gm (V_cp - V_cn) at out_p                  gm, S        v_ctrl(free) dv_out
diode       I_s (exp(v_j / (n V_t)) - 1), v_j = dv -   (none)       (none)
            i r_s
mosfet      SPICE level 1, all three regions           vg, V        ground gate: di/dvg(free) dv;
                                                                    midpoint: dG/dvg (co-content)
vcvs        V_op - V_on = gain (V_cp - V_cn)           (none)       (none)
==========  =========================================  ===========  ======================
"""

from __future__ import annotations

import math
import re

import numpy as np

#: the thermal voltage k T / q at 300 K (V), with ngspice's constants (its decks run at 300 K)
BOLTZMANN, CHARGE = 1.38064852e-23, 1.6021766208e-19
TEMPERATURE = 300.0
VT = BOLTZMANN * TEMPERATURE / CHARGE
#: a diode's exponent beyond this is continued linearly (currents of 1e35 A: never a solution, only a
#: Newton iterate, which must stay finite)
EXP_LIMIT = 100.0


class ElementError(ValueError):
    """An element entry that cannot be used (raised as :class:`hil.circuit.CircuitError` by the loader)."""


def _number(t: dict, key: str, where: str, what: str, unit: str, positive=False, nonneg=False, default=None):
    """t[key] as a float, checked finite (and > 0 / >= 0); ElementError naming the element and key."""
    if key not in t:
        if default is None:
            raise ElementError(f"{where}: {what}: missing '{key}'")
        return float(default)
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ElementError(f"{where}: {what}: {key} = {v!r} is not a finite number ({unit})")
    if positive and v <= 0:
        raise ElementError(f"{where}: {what}: {key} = {v!r} must be positive ({unit})")
    if nonneg and v < 0:
        raise ElementError(f"{where}: {what}: {key} = {v!r} must not be negative ({unit})")
    return float(v)


def _flag(t: dict, key: str, where: str, what: str) -> bool:
    v = t.get(key, False)
    if not isinstance(v, bool):
        raise ElementError(f"{where}: {what}: {key} = {v!r} must be true or false")
    return v


class Kind:
    """All elements of one kind in a circuit. Subclasses declare the class attributes and the physics."""

    table = ""            # the circuit file's [[table]]
    prefix = "X"          # default names: prefix + number
    terminals = ()        # keys naming nodes, in order
    keys = ()             # every allowed key
    param = None          # the trainable parameter's key
    unit = ""             # its unit
    linear = True
    branch = False
    reciprocal = True

    def __init__(self, names, nodes, values: dict, fixed=None):
        self.names = tuple(names)
        self.nodes = np.asarray(nodes, int).reshape(len(self.names), len(self.terminals))
        self.values = {k: np.asarray(v, float) for k, v in values.items()}
        self.fixed = np.zeros(len(self.names), bool) if fixed is None else np.asarray(fixed, bool)

    def __len__(self):
        return len(self.names)

    @property
    def trainable(self) -> np.ndarray:
        """Indices of the elements whose ``param`` is trained."""
        if self.param is None:
            return np.zeros(0, int)
        return np.flatnonzero(~self.fixed)

    def with_values(self, **values) -> "Kind":
        new = type(self)(self.names, self.nodes, {**self.values, **values}, self.fixed)
        return new

    def bounds(self) -> tuple:
        """(lo, hi) of the trainable parameters, in element order."""
        return np.zeros(0), np.zeros(0)

    # -- physics: Vt (B, k, T) terminal voltages (a branch current at a branch terminal) -------------
    def evaluate(self, Vt):
        """(i (B, k, T), G (B, k, T, T)): terminal currents (A) and their stamp d i_t / d V_u (S)."""
        raise NotImplementedError

    def dparam(self, Vt):
        """d i_t / d theta (B, k, T) for every element (units A per unit of ``param``)."""
        raise NotImplementedError

    def local_signal(self, Vfree, Vstate):
        """The rule's local signal at a state (B, k), whose d/dbeta at 0 is -mu^T dF/dtheta_k."""
        dv = self.dparam(Vfree)
        return np.sum(dv * Vstate, axis=-1)

    def outside_linear(self, Vt):
        """(B, k) bool: elements outside their linear region at this state (none for linear kinds)."""
        return np.zeros(Vt.shape[:-1], bool)

    def card(self, sc, nn, j: int, value=None, adjoint=False) -> None:
        """Add element j's SPICE card(s) to the PySpice circuit ``sc`` (``nn``: node index -> SPICE node)."""
        raise NotImplementedError

    def toml(self, j: int, node_names) -> list:
        raise NotImplementedError


# -- the kinds ---------------------------------------------------------------------------------------

class Resistor(Kind):
    """[[edge]]: i = g (V_a - V_b), theta = g (S). Built from the circuit's edge arrays."""

    table, prefix, terminals, param, unit = "edge", "E", ("a", "b"), "g", "S"

    def evaluate(self, Vt):
        g = self.values["g"]
        dv = Vt[..., 0] - Vt[..., 1]
        i = np.stack([g * dv, -g * dv], axis=-1)
        G = np.broadcast_to(np.array([[1.0, -1.0], [-1.0, 1.0]]) * g[:, None, None], Vt.shape[:-1] + (2, 2))
        return i, G

    def dparam(self, Vt):
        dv = Vt[..., 0] - Vt[..., 1]
        return np.stack([dv, -dv], axis=-1)

    def local_signal(self, Vfree, Vstate):
        dv = Vstate[..., 0] - Vstate[..., 1]
        return 0.5 * dv * dv


class VCCS(Kind):
    """[[vccs]]: gm (V_cp - V_cn) leaves out_p and enters out_n; theta = gm (S). Non-reciprocal."""

    table, prefix, terminals, param, unit, reciprocal = "vccs", "G", ("out_p", "out_n", "ctrl_p", "ctrl_n"), "gm", "S", False

    def evaluate(self, Vt):
        gm = self.values["gm"]
        vc = Vt[..., 2] - Vt[..., 3]
        z = np.zeros_like(vc)
        i = np.stack([gm * vc, -gm * vc, z, z], axis=-1)
        S = np.zeros((4, 4))
        S[0, 2], S[0, 3], S[1, 2], S[1, 3] = 1, -1, -1, 1
        return i, np.broadcast_to(S * gm[:, None, None], Vt.shape[:-1] + (4, 4))

    def dparam(self, Vt):
        vc = Vt[..., 2] - Vt[..., 3]
        z = np.zeros_like(vc)
        return np.stack([vc, -vc, z, z], axis=-1)

    def local_signal(self, Vfree, Vstate):
        return (Vfree[..., 2] - Vfree[..., 3]) * (Vstate[..., 0] - Vstate[..., 1])


class Diode(Kind):
    """[[diode]]: Shockley, i = I_s (exp(v_j / (n V_t)) - 1) from anode a to cathode b, v_j = dv - i r_s.

    With r_s > 0 the junction drop is solved in closed form: i + I_s = (n V_t / r_s)
    W(I_s r_s / (n V_t) exp((dv + I_s r_s) / (n V_t))), W Lambert's function (scipy's
    ``wrightomega`` of the logarithm). Nothing trainable; conducting (v_j > 3 n V_t... counted
    as outside the linear region when v_j > 0).
    """

    table, prefix, terminals, linear = "diode", "D", ("a", "b"), False
    keys = ("name", "a", "b", "is", "n", "rs", "model")

    @classmethod
    def parse(cls, tables, ctx):
        names, nodes, vals = [], [], {"is": [], "n": [], "rs": []}
        for j, t in enumerate(ctx.tables(tables, cls)):
            nm, where = ctx.header(t, j, cls)
            what = f"diode '{nm}'"
            model = t.get("model", "shockley")
            if model != "shockley":
                raise ElementError(f"{ctx.at('model', j, cls.table)}: {what}: model = {model!r} is not supported "
                                   "(expected \"shockley\"; the piecewise-linear \"ideal\" diode is not implemented yet)")
            nodes.append(ctx.two_terminals(t, j, cls, what))
            vals["is"].append(_number(t, "is", ctx.at("is", j, cls.table), what, "A", positive=True))
            vals["n"].append(_number(t, "n", ctx.at("n", j, cls.table), what, "1", positive=True, default=1.0))
            vals["rs"].append(_number(t, "rs", ctx.at("rs", j, cls.table), what, "ohms", nonneg=True, default=0.0))
            names.append(nm)
        return cls(names, np.array(nodes, int).reshape(-1, 2), vals)

    def _current(self, dv):
        """(i, di/ddv) of each diode at drops dv (B, k)."""
        Is, nvt, rs = self.values["is"], self.values["n"] * VT, self.values["rs"]
        x = dv / nvt
        ex = np.exp(np.minimum(x, EXP_LIMIT))
        e_lin = ex * (1 + np.maximum(x - EXP_LIMIT, 0.0))  # linear continuation past EXP_LIMIT
        i = Is * (e_lin - 1)
        gd = Is * ex / nvt
        if np.any(rs > 0):
            from scipy.special import wrightomega
            ser = rs > 0
            rr = np.where(ser, rs, 1.0)
            z = (dv + Is * rr) / nvt + np.log(Is * rr / nvt)
            w = np.real(wrightomega(z))
            i_s = nvt / rr * w - Is
            vj = dv - i_s * rr
            gj = (i_s + Is) / nvt  # d i / d vj
            g_s = gj / (1 + rr * gj)
            i = np.where(ser, i_s, i)
            gd = np.where(ser, g_s, gd)
        return i, gd

    def junction(self, Vt):
        """The junction drop v_j = dv - i r_s (B, k), volts."""
        dv = Vt[..., 0] - Vt[..., 1]
        i, _ = self._current(dv)
        return dv - i * self.values["rs"]

    def evaluate(self, Vt):
        i, gd = self._current(Vt[..., 0] - Vt[..., 1])
        G = np.empty(i.shape + (2, 2))
        G[..., 0, 0] = G[..., 1, 1] = gd
        G[..., 0, 1] = G[..., 1, 0] = -gd
        return np.stack([i, -i], axis=-1), G

    def outside_linear(self, Vt):
        return self.junction(Vt) > 0

    def card(self, sc, nn, j, value=None, adjoint=False):
        nm = self.names[j]
        a, b = (nn(x) for x in self.nodes[j])
        sc.raw_spice += (f".model dm_{nm.lower()} d is={float(self.values['is'][j])!r} n={float(self.values['n'][j])!r} "
                         f"rs={float(self.values['rs'][j])!r}\n")
        sc.D(f"d_{nm}", a, b, model=f"dm_{nm.lower()}")

    def toml(self, j, node_names):
        a, b = (node_names[x] for x in self.nodes[j])
        return ["[[diode]]", f'name = "{self.names[j]}"', f'a = "{a}"', f'b = "{b}"',
                f"is = {float(self.values['is'][j])!r}", f"n = {float(self.values['n'][j])!r}", f"rs = {float(self.values['rs'][j])!r}", ""]


#: default bounds on a channel's gate voltage (V)
VG_MIN, VG_MAX = 0.0, 10.0
#: default channel width and length (m) written to SPICE cards; only W/L enters the current
W_DEFAULT = L_DEFAULT = 1.0e-6


class Mosfet(Kind):
    """[[mosfet]]: an NMOS channel, SPICE level 1 (Shichman-Hodges, body effect off), drain d, source s.

    k = kp w / l (A/V^2), V_ov = V_GS - vto. With V_DS >= 0: cutoff (V_ov <= 0) i = 0; triode
    (V_DS < V_ov) i = k (V_ov V_DS - V_DS^2 / 2)(1 + lambda V_DS); saturation i = k/2 V_ov^2
    (1 + lambda V_DS). With V_DS < 0 drain and source swap. The gate: "ground": V_G = vg;
    "midpoint": V_G = vg + (V_d + V_s)/2, so that in triode (lambda = 0) i = k (vg - vto) dv,
    a reciprocal conductance. theta = vg (V), in [vg_min, vg_max].
    """

    table, prefix, terminals, param, unit, linear = "mosfet", "M", ("d", "s"), "vg", "V", False
    keys = ("name", "d", "s", "gate", "vg", "vg_min", "vg_max", "kp", "vto", "lambda", "w", "l", "fixed")

    def __init__(self, names, nodes, values, fixed=None):
        super().__init__(names, nodes, values, fixed)
        self.midpoint = self.values.get("midpoint", np.zeros(len(self.names))).astype(bool)
        self.reciprocal = bool(self.midpoint.all()) and not np.any(self.values.get("lambda", np.zeros(1)) != 0)

    @classmethod
    def parse(cls, tables, ctx):
        names, nodes, fixed = [], [], []
        vals = {k: [] for k in ("vg", "vg_min", "vg_max", "kp", "vto", "lambda", "w", "l", "midpoint")}
        for j, t in enumerate(ctx.tables(tables, cls)):
            nm, where = ctx.header(t, j, cls)
            what = f"mosfet '{nm}'"
            at = lambda k: ctx.at(k, j, cls.table)
            nodes.append(ctx.two_terminals(t, j, cls, what))
            gate = t.get("gate", "ground")
            if gate not in ("ground", "midpoint"):
                raise ElementError(f"{at('gate')}: {what}: gate = {gate!r} (expected \"ground\" or \"midpoint\")")
            vals["midpoint"].append(float(gate == "midpoint"))
            lo = _number(t, "vg_min", at("vg_min"), what, "V", default=VG_MIN)
            hi = _number(t, "vg_max", at("vg_max"), what, "V", default=VG_MAX)
            if not lo < hi:
                raise ElementError(f"{at('vg_min')}: {what}: vg_min = {lo} must be below vg_max = {hi}")
            vg = _number(t, "vg", at("vg"), what, "V")
            fx = _flag(t, "fixed", at("fixed"), what)
            if not fx and not lo <= vg <= hi:
                raise ElementError(f"{at('vg')}: {what}: vg = {vg!r} V is outside [vg_min, vg_max] = [{lo}, {hi}]")
            vals["vg"].append(vg); vals["vg_min"].append(lo); vals["vg_max"].append(hi)
            vals["kp"].append(_number(t, "kp", at("kp"), what, "A/V^2", positive=True))
            vals["vto"].append(_number(t, "vto", at("vto"), what, "V"))
            vals["lambda"].append(_number(t, "lambda", at("lambda"), what, "1/V", nonneg=True, default=0.0))
            vals["w"].append(_number(t, "w", at("w"), what, "m", positive=True, default=W_DEFAULT))
            vals["l"].append(_number(t, "l", at("l"), what, "m", positive=True, default=L_DEFAULT))
            names.append(nm); fixed.append(fx)
        return cls(names, np.array(nodes, int).reshape(-1, 2), vals, fixed)

    def bounds(self):
        j = self.trainable
        return self.values["vg_min"][j], self.values["vg_max"][j]

    @property
    def k(self):
        return self.values["kp"] * self.values["w"] / self.values["l"]

    def _channel(self, Vt):
        """Per element and example: (i, di/dVd, di/dVs, di/dvg, region) with region 0 cutoff, 1 triode, 2 saturation."""
        vd, vs = Vt[..., 0], Vt[..., 1]
        vg, vto, lam, k = self.values["vg"], self.values["vto"], self.values["lambda"], self.k
        mid = self.midpoint
        vds = vd - vs
        rev = vds < 0
        # the device's own source (lower) and drain (higher) terminal
        lo_v, hi_v = np.where(rev, vd, vs), np.where(rev, vs, vd)
        u = hi_v - lo_v                                   # V_DS >= 0 of the oriented device
        vgate = np.where(mid, vg + 0.5 * (vd + vs), vg)
        vov = vgate - lo_v - vto
        on = vov > 0
        sat = on & (vov <= u)
        tri = on & ~sat
        f = 1 + lam * u
        i_t = k * (vov * u - 0.5 * u * u) * f
        i_s = 0.5 * k * vov * vov * f
        i0 = np.where(tri, i_t, np.where(sat, i_s, 0.0))
        # derivatives of the oriented current with respect to vov and u
        d_ov = np.where(tri, k * u * f, np.where(sat, k * vov * f, 0.0))
        d_u = np.where(tri, k * (vov - u) * f + k * (vov * u - 0.5 * u * u) * lam,
                       np.where(sat, 0.5 * k * vov * vov * lam, 0.0))
        # vov = vgate - lo_v - vto with vgate = vg (+ (vd + vs)/2): d vov / d lo_v = -1 (+ 1/2), d/d hi_v = 0 (+ 1/2)
        dlo = -d_u + d_ov * np.where(mid, -0.5, -1.0)
        dhi = d_u + d_ov * np.where(mid, 0.5, 0.0)
        sign = np.where(rev, -1.0, 1.0)                   # current from d to s
        i = sign * i0
        di_dvd = sign * np.where(rev, dlo, dhi)
        di_dvs = sign * np.where(rev, dhi, dlo)
        di_dvg = sign * d_ov
        region = np.where(tri, 1, np.where(sat, 2, 0))
        return i, di_dvd, di_dvs, di_dvg, region

    def evaluate(self, Vt):
        i, gd, gs, _, _ = self._channel(Vt)
        G = np.empty(i.shape + (2, 2))
        G[..., 0, 0], G[..., 0, 1], G[..., 1, 0], G[..., 1, 1] = gd, gs, -gd, -gs
        return np.stack([i, -i], axis=-1), G

    def dparam(self, Vt):
        di = self._channel(Vt)[3]
        return np.stack([di, -di], axis=-1)

    def regions(self, Vt):
        """(B, k): 0 cutoff, 1 triode, 2 saturation."""
        return self._channel(Vt)[4]

    def outside_linear(self, Vt):
        return self.regions(Vt) != 1

    def local_signal(self, Vfree, Vstate):
        """Ground gate: di/dvg at the free state times dv at the state. Midpoint gate: the co-content's
        derivative dG/dvg = integral_0^dv di/dvg(u) du at the state (1/2 k dv^2 in triode, lambda = 0)."""
        ls = super().local_signal(Vfree, Vstate)
        if not self.midpoint.any() or np.iscomplexobj(Vstate):  # a complex (linearised) state: the product form
            return ls
        return np.where(self.midpoint, self._cocontent_dvg(Vstate), ls)

    def _cocontent_dvg(self, Vt):
        """dG/dvg at the state of a midpoint channel: di/dvg is a polynomial of degree <= 2 in u on each
        region of [0, |dv|]; 3-point Gauss-Legendre per region integrates it exactly."""
        dv = Vt[..., 0] - Vt[..., 1]
        u = np.abs(dv)
        ov = self.values["vg"] - self.values["vto"]
        brk = np.minimum(np.abs(2 * ov) * np.ones_like(u), u)  # the region boundary inside [0, u]
        xs, ws = np.polynomial.legendre.leggauss(3)
        total = np.zeros_like(u)
        for a, b in ((np.zeros_like(u), brk), (brk, u)):
            for x, w in zip(xs, ws):
                t = 0.5 * (a + b) + 0.5 * (b - a) * x
                V = np.stack([t, np.zeros_like(t)], axis=-1)
                total = total + 0.5 * (b - a) * w * self._channel(V)[3]
        return total  # di/dvg is odd in dv: its integral is even

    def card(self, sc, nn, j, value=None, adjoint=False):
        nm = self.names[j]
        d, s = (nn(x) for x in self.nodes[j])
        v = self.values
        vg = float(v["vg"][j] if value is None else value)
        sc.raw_spice += (f".model mm_{nm.lower()} nmos level=1 vto={float(v['vto'][j])!r} kp={float(v['kp'][j])!r} "
                         f"lambda={float(v['lambda'][j])!r} gamma=0 is=1e-30\n")
        hg = f"hg_{nm}".lower()
        sc.M(f"m_{nm}", d, hg, s, "hb_el", model=f"mm_{nm.lower()}", w=repr(float(v["w"][j])), l=repr(float(v["l"][j])))
        if self.midpoint[j]:
            h1, h2 = f"hm_{nm}".lower(), f"hc_{nm}".lower()
            sc.VCVS(f"md_{nm}", hg, h1, d, sc.gnd, "0.5")
            sc.VCVS(f"ms_{nm}", h1, h2, s, sc.gnd, "0.5")
            sc.V(f"g_{nm}", h2, sc.gnd, repr(vg))
        else:
            sc.V(f"g_{nm}", hg, sc.gnd, repr(vg))

    def gate_source(self, j) -> str:
        """ngspice's name of the source holding element j's vg (altered on a write)."""
        return f"vg_{self.names[j]}".lower()

    def toml(self, j, node_names):
        d, s = (node_names[x] for x in self.nodes[j])
        v = self.values
        out = ["[[mosfet]]", f'name = "{self.names[j]}"', f'd = "{d}"', f's = "{s}"',
               f'gate = "{"midpoint" if self.midpoint[j] else "ground"}"', f"vg = {float(v['vg'][j])!r}",
               f"vg_min = {float(v['vg_min'][j])!r}", f"vg_max = {float(v['vg_max'][j])!r}", f"kp = {float(v['kp'][j])!r}",
               f"vto = {float(v['vto'][j])!r}", f"lambda = {float(v['lambda'][j])!r}", f"w = {float(v['w'][j])!r}", f"l = {float(v['l'][j])!r}"]
        return out + (["fixed = true", ""] if self.fixed[j] else [""])


class VCVS(Kind):
    """[[vcvs]]: SPICE E, V_op - V_on = gain (V_cp - V_cn). Its branch current i (A, from out_p through the
    source to out_n) is an unknown of its own (modified nodal analysis). Non-reciprocal, nothing trainable."""

    table, prefix, terminals, branch, reciprocal = "vcvs", "E", ("out_p", "out_n", "ctrl_p", "ctrl_n"), True, False
    keys = ("name", "out_p", "out_n", "ctrl_p", "ctrl_n", "gain")

    @classmethod
    def parse(cls, tables, ctx):
        names, nodes, gains = [], [], []
        for j, t in enumerate(ctx.tables(tables, cls)):
            nm, where = ctx.header(t, j, cls)
            what = f"vcvs '{nm}'"
            idx = [ctx.terminal(t, k, j, cls, what) for k in cls.terminals]
            if idx[0] == idx[1]:
                raise ElementError(f"{ctx.at('out_n', j, cls.table)}: {what}: out_p and out_n are both node "
                                   f"'{t['out_p']}'")
            if idx[2] == idx[3]:
                raise ElementError(f"{ctx.at('ctrl_n', j, cls.table)}: {what}: ctrl_p and ctrl_n are both node "
                                   f"'{t['ctrl_p']}' (its output would always be 0 V)")
            gains.append(_number(t, "gain", ctx.at("gain", j, cls.table), what, "V/V"))
            names.append(nm); nodes.append(idx)
        return cls(names, np.array(nodes, int).reshape(-1, 4), {"gain": gains})

    def evaluate(self, Vt):
        # terminals: out_p, out_n, ctrl_p, ctrl_n, then the branch current (the 5th "terminal")
        g = self.values["gain"]
        ib = Vt[..., 4]
        z = np.zeros_like(ib)
        con = Vt[..., 0] - Vt[..., 1] - g * (Vt[..., 2] - Vt[..., 3])
        i = np.stack([ib, -ib, z, z, con], axis=-1)
        G = np.zeros(ib.shape + (5, 5))
        G[..., 0, 4], G[..., 1, 4] = 1.0, -1.0
        G[..., 4, 0], G[..., 4, 1] = 1.0, -1.0
        G[..., 4, 2], G[..., 4, 3] = -g, g
        return i, G

    def card(self, sc, nn, j, value=None, adjoint=False):
        op, on, cp, cn = (nn(x) for x in self.nodes[j])
        sc.VCVS(f"e_{self.names[j]}", op, on, cp, cn, repr(float(self.values["gain"][j])))

    def toml(self, j, node_names):
        nd = [node_names[x] for x in self.nodes[j]]
        return ["[[vcvs]]", f'name = "{self.names[j]}"', f'out_p = "{nd[0]}"', f'out_n = "{nd[1]}"',
                f'ctrl_p = "{nd[2]}"', f'ctrl_n = "{nd[3]}"', f"gain = {float(self.values['gain'][j])!r}", ""]


#: the kinds a circuit file may hold beside [[edge]], [[vccs]] and [[bias]], in the order theta lists them
KINDS = (Diode, Mosfet, VCVS)


_SPICE_SCALE = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}


def spice_number(text: str) -> float:
    """A SPICE number: ``200u`` = 2e-4, ``1meg`` = 1e6 (trailing unit letters after the scale are ignored)."""
    m = re.match(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(meg|[tgkmunpf])?", text.strip().lower())
    if not m:
        raise ValueError(f"not a SPICE number: {text!r}")
    return float(m.group(1)) * _SPICE_SCALE.get(m.group(2) or "", 1.0)


def level1_parameters(card: str) -> dict:
    """vto (V), kp (A/V^2), lambda (1/V) of a ``.model ... nmos level=1 ...`` card (SPICE defaults where absent)."""
    params = dict(re.findall(r"(\w+)\s*=\s*([^\s()]+)", card.replace("\n+", " ")))
    params = {k.lower(): v for k, v in params.items()}
    if spice_number(params.get("level", "1")) != 1:
        raise ValueError("not a level-1 MOSFET model card")
    return {"vto": spice_number(params.get("vto", "0")), "kp": spice_number(params.get("kp", "2e-5")),
            "lambda": spice_number(params.get("lambda", "0"))}


def channels_on_edges(circuit, vg, midpoint: bool, kp: float, vto: float, lam: float, w, l) -> Mosfet:
    """A channel (level 1) on every edge of ``circuit``: drain a, source b, gate voltages vg (m,) V, trainable in
    [0, 10] V; w (m,) and l in metres."""
    m = circuit.m
    vals = {"vg": np.asarray(vg, float), "vg_min": np.zeros(m), "vg_max": np.full(m, VG_MAX), "kp": np.full(m, kp),
            "vto": np.full(m, vto), "lambda": np.full(m, lam), "w": np.broadcast_to(np.asarray(w, float), (m,)).copy(),
            "l": np.full(m, l), "midpoint": np.full(m, float(midpoint))}
    return Mosfet(tuple(f"ch_{nm}" for nm in circuit.edge_names), np.column_stack([circuit.a, circuit.b]), vals)
