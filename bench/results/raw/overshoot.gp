set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'
set output 'overshoot.png'

set multiplot layout 1,2
set title 'Allocation-limit overshoot (reported - limit), all trials'
set style fill solid 0.8
set boxwidth 0.6
set xlabel 'overshoot (bytes)'
set ylabel 'trials'
set xrange [-1:5]
set yrange [0:*]
plot 'raw/overshoot.dat' index 0 using 1:2 with boxes lc rgb '#3070b0' title 'trials'
set title 'Where the refusal falls: (limit - count) / refused request size'
set xlabel 'limit L (bytes)'
set ylabel '(L - S) / r   (must be in [0, 1))'
set logscale x
set xrange [*:*]
set yrange [-0.05:1.05]
plot 'raw/overshoot.dat' index 1 using 1:2 with points pt 7 ps 0.3 lc rgb '#b03030' title 'trial'
unset multiplot
