set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'
set output 'rss.png'

set title 'Peak RSS relative to min(glibc, jemalloc) (median of runs)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel 'peak RSS / min(glibc, jemalloc)'
set yrange [0:*]
set grid ytics
set key outside right top
set xtics rotate by -20
set arrow from graph 0, first 1.10 to graph 1, first 1.10 nohead dt 2 lc rgb 'red'
plot for [i=2:7] 'raw/rss.dat' using i:xtic(1) title columnhead(i)
