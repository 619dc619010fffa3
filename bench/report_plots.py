"""report_plots: the PNG plots of the report, drawn by gnuplot from data and scripts that are
kept in raw/ beside the data they show."""
import os
import subprocess


class Plots:
    """Draws plots into RESULTS_DIR/NAME.png, keeping the failures for the report's last
    section: `made` lists the plots drawn, `errors` the ones gnuplot failed on."""

    def __init__(self, outdir, gnuplot):
        self.outdir = outdir
        self.gnuplot = gnuplot
        self.made = []
        self.errors = []

    def plot(self, name, script, data):
        # Paths relative to the results directory, where gnuplot runs: the scripts in raw/ can
        # be rerun there by hand (gnuplot raw/NAME.gp).
        dat = os.path.join("raw", name + ".dat")
        with open(os.path.join(self.outdir, dat), "w") as f:
            f.write(data)
        full = ("set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'\n"
                "set output '%s.png'\n" % name) + script.replace("DATA", "'%s'" % dat)
        gp = os.path.join("raw", name + ".gp")
        with open(os.path.join(self.outdir, gp), "w") as f:
            f.write(full)
        r = subprocess.run([self.gnuplot, gp], capture_output=True, text=True, cwd=self.outdir)
        if r.returncode != 0:
            self.errors.append("%s: %s" % (name, r.stderr.strip()[:300]))
        else:
            self.made.append(name + ".png")
