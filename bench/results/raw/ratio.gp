set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'
set output 'ratio.png'

set title 'Time relative to bare jemalloc (median of runs; 1.0 = jemalloc)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'median time / jemalloc median'
set logscale y 2
set yrange [0.015:*]
set grid ytics
set key outside right top
set xtics rotate by -20
set arrow from graph 0, first 1.05 to graph 1, first 1.05 nohead dt 2 lc rgb 'red'
plot for [i=2:7] 'raw/ratio.dat' using i:xtic(1) title columnhead(i)
